"""psycopg 3 against a running ddb node, with the driver's defaults.

    pip install 'psycopg[binary]'
    python3 tests/drivers/psycopg3_basics.py SQL_PORT

psycopg 3 binds parameters server-side (the extended protocol), prepares a statement
server-side from its 5th execution, runs `executemany` in pipeline mode (many Parse/Bind/
Execute before one Sync), and opens a transaction before the first statement. Checks those,
an explicit pipeline with a failing statement in the middle, `conn.transaction()` blocks,
a read-only session, and type round trips in binary. (tests/drivers/session.py covers the
rollback after auto-prepared statements.) Exits non-zero when a result is not what it must be.
"""
import datetime
import sys

import psycopg

port = int(sys.argv[1])
dsn = f"host=127.0.0.1 port={port} user=tester dbname=ddb"

with psycopg.connect(dsn, autocommit=True) as a:
    assert a.execute("SELECT version()").fetchone()[0].startswith("ddb")
    a.execute("DROP TABLE IF EXISTS p3")
    a.execute("CREATE TABLE p3 (id INT PRIMARY KEY, v TEXT, at TIMESTAMP, ok BOOLEAN, f DOUBLE PRECISION)")

def count(c):
    return c.execute("SELECT count(*) FROM p3").fetchone()[0]

with psycopg.connect(dsn) as c:
    assert psycopg.Pipeline.is_supported()
    cur = c.cursor()
    cur.executemany("INSERT INTO p3 (id, v) VALUES (%s, %s)", [(i, f"v{i}") for i in range(50)])
    assert cur.rowcount == 50, cur.rowcount
    c.commit()
    assert count(c) == 50
    # One statement executed 10 times: prepared server-side from the 5th.
    for i in range(10):
        assert c.execute("SELECT v FROM p3 WHERE id = %s", (i,)).fetchone() == (f"v{i}",)
    c.commit()

    # An explicit pipeline: the results of statements sent before any was answered.
    with c.pipeline():
        for i in range(50, 60):
            c.execute("INSERT INTO p3 (id, v) VALUES (%s, %s)", (i, "piped"))
        inside = c.execute("SELECT count(*) FROM p3")
    assert inside.fetchone() == (60,)
    c.rollback()
    assert count(c) == 50
    c.rollback()
    # A failing statement in a pipeline: the error is raised, nothing of the block remains.
    try:
        with c.pipeline():
            c.execute("INSERT INTO p3 (id, v) VALUES (%s, %s)", (100, "lost"))
            c.execute("INSERT INTO p3 (id, v) VALUES (%s, %s)", (1, "duplicate"))
            c.execute("INSERT INTO p3 (id, v) VALUES (%s, %s)", (101, "never run"))
        raise AssertionError("a duplicate key was accepted")
    except psycopg.errors.UniqueViolation as e:
        assert e.sqlstate == "23505", e.sqlstate
    c.rollback()
    assert count(c) == 50
    c.commit()

    # conn.transaction(): committed at the end, rolled back on an exception.
    c.autocommit = True
    with c.transaction():
        c.execute("INSERT INTO p3 (id, v) VALUES (200, 'kept')")
    try:
        with c.transaction():
            c.execute("INSERT INTO p3 (id, v) VALUES (201, 'undone')")
            raise KeyError("application error")
    except KeyError:
        pass
    assert c.execute("SELECT id FROM p3 WHERE id >= 200 ORDER BY id").fetchall() == [(200,)]

    # Types in binary, through parameters and back.
    ts = datetime.datetime(2024, 2, 29, 13, 45, 6, 123456)
    cur = c.cursor(binary=True)
    cur.execute("INSERT INTO p3 VALUES (%s, %s, %s, %s, %s)", (300, "é'\"", ts, False, -1.5e-300))
    cur.execute("SELECT id, v, at, ok, f FROM p3 WHERE id = %s", (300,))
    assert cur.fetchone() == (300, "é'\"", ts, False, -1.5e-300)
    cur.execute("SELECT v, at, ok, f FROM p3 WHERE id = %s", (0,))
    assert cur.fetchone() == ("v0", None, None, None)

# A read-only session: reads work, a write is refused with 25006.
with psycopg.connect(dsn) as c:
    c.read_only = True
    assert count(c) == 52
    try:
        c.execute("INSERT INTO p3 (id) VALUES (400)")
        raise AssertionError("a write in a read-only transaction was accepted")
    except psycopg.errors.ReadOnlySqlTransaction as e:
        assert e.sqlstate == "25006", e.sqlstate
    c.rollback()
print("psycopg 3 ok")
