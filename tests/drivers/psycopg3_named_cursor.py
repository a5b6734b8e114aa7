"""psycopg 3's server-side (named) cursor against a running ddb node.

    python3 tests/drivers/psycopg3_named_cursor.py SQL_PORT

`conn.cursor(name=...)` sends `DECLARE … CURSOR` in the transaction psycopg opens, then
`FETCH FORWARD n` for each `fetchmany(n)` and `CLOSE` at the end. Needs DECLARE/FETCH/CLOSE
(issue 11, point 2): tests/drivers.rs runs it as an ignored test until they are merged. Exits
non-zero when a result is not what it must be.
"""
import sys

import psycopg

port = int(sys.argv[1])
dsn = f"host=127.0.0.1 port={port} user=tester dbname=ddb"
with psycopg.connect(dsn, autocommit=True) as a:
    a.execute("DROP TABLE IF EXISTS pnc")
    a.execute("CREATE TABLE pnc (id INT PRIMARY KEY, v TEXT)")
    with a.cursor() as cur:
        cur.executemany("INSERT INTO pnc VALUES (%s, %s)", [(i, f"v{i}") for i in range(100)])
with psycopg.connect(dsn) as c:
    with c.cursor(name="big") as cur:
        cur.execute("SELECT id, v FROM pnc WHERE id >= %s ORDER BY id", (10,))
        first = cur.fetchmany(25)
        assert [r[0] for r in first] == list(range(10, 35)), first
        rest = cur.fetchall()
        assert [r[0] for r in rest] == list(range(35, 100)), rest
    c.commit()
print("psycopg named cursor ok")
