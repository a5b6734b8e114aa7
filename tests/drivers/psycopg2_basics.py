"""psycopg2 against a running ddb node, with the driver's defaults.

    pip install psycopg2-binary
    python3 tests/drivers/psycopg2_basics.py SQL_PORT

psycopg2 speaks the simple query protocol and opens a transaction before the first statement
(autocommit off): connect, execute with parameters, executemany, commit and rollback, an error
and then rollback, and `with conn:` blocks (commit on success, rollback on an exception).
Exits non-zero when a result is not what it must be.
"""
import sys

import psycopg2
import psycopg2.errors

port = int(sys.argv[1])
dsn = f"host=127.0.0.1 port={port} user=tester dbname=ddb"

def count(cur, where="true"):
    cur.execute(f"SELECT count(*) FROM p2 WHERE {where}")
    return cur.fetchone()[0]

setup = psycopg2.connect(dsn)
setup.autocommit = True
with setup.cursor() as cur:
    cur.execute("SELECT version()")
    assert cur.fetchone()[0].startswith("ddb"), "version() says ddb"
    cur.execute("DROP TABLE IF EXISTS p2")
    cur.execute("CREATE TABLE p2 (id INT PRIMARY KEY, name TEXT, score DOUBLE PRECISION, ok BOOLEAN)")
setup.close()

conn = psycopg2.connect(dsn)
assert conn.server_version > 0, conn.server_version
cur = conn.cursor()
# execute with parameters (psycopg2 quotes them client-side), including a quote and a NULL.
cur.execute("INSERT INTO p2 (id, name, score, ok) VALUES (%s, %s, %s, %s)", (1, "o'brien", 1.25, True))
cur.execute("INSERT INTO p2 (id, name, score, ok) VALUES (%(id)s, %(name)s, %(score)s, %(ok)s)",
            {"id": 2, "name": None, "score": None, "ok": None})
assert cur.rowcount == 1, cur.rowcount
cur.executemany("INSERT INTO p2 (id, name, score, ok) VALUES (%s, %s, %s, %s)",
                [(i, f"m{i}", i / 2, i % 2 == 0) for i in range(10, 40)])
assert conn.status == psycopg2.extensions.STATUS_IN_TRANSACTION
conn.commit()
cur.execute("SELECT id, name, score, ok FROM p2 WHERE id IN (%s, %s) ORDER BY id", (1, 2))
assert cur.fetchall() == [(1, "o'brien", 1.25, True), (2, None, None, None)]
cur.execute("SELECT name FROM p2 WHERE id = %s", (11,))
assert cur.fetchone() == ("m11",)
assert count(cur) == 32

# rollback undoes the whole transaction psycopg2 opened.
cur.execute("DELETE FROM p2 WHERE id >= %s", (10,))
assert cur.rowcount == 30, cur.rowcount
cur.execute("UPDATE p2 SET name = %s WHERE id = %s", ("changed", 1))
conn.rollback()
assert count(cur) == 32
cur.execute("SELECT name FROM p2 WHERE id = 1")
assert cur.fetchone() == ("o'brien",)
conn.commit()

# An error: the transaction is aborted (InFailedSqlTransaction) until rollback.
cur.execute("INSERT INTO p2 (id) VALUES (100)")
try:
    cur.execute("INSERT INTO p2 (id) VALUES (1)")
    raise AssertionError("a duplicate key was accepted")
except psycopg2.errors.UniqueViolation as e:
    assert e.pgcode == "23505", e.pgcode
try:
    cur.execute("SELECT 1")
    raise AssertionError("a statement in an aborted transaction ran")
except psycopg2.errors.InFailedSqlTransaction as e:
    assert e.pgcode == "25P02", e.pgcode
conn.rollback()
assert count(cur, "id = 100") == 0
conn.commit()

# `with conn:` commits when the block ends, rolls back when it raises.
with conn:
    with conn.cursor() as c2:
        c2.execute("INSERT INTO p2 (id, name) VALUES (%s, %s)", (200, "with-commit"))
try:
    with conn:
        with conn.cursor() as c2:
            c2.execute("INSERT INTO p2 (id, name) VALUES (%s, %s)", (201, "with-rollback"))
            raise KeyError("application error")
except KeyError:
    pass
other = psycopg2.connect(dsn)
with other, other.cursor() as oc:
    oc.execute("SELECT id FROM p2 WHERE id >= 200 ORDER BY id")
    assert oc.fetchall() == [(200,)]
other.close()

# A syntax error names its SQLSTATE; the connection is usable after the rollback.
try:
    cur.execute("SELEKT 1")
    raise AssertionError("a syntax error ran")
except psycopg2.errors.SyntaxError as e:
    assert e.pgcode == "42601", e.pgcode
conn.rollback()

# autocommit: each statement is its own transaction, visible to others at once.
conn.autocommit = True
cur.execute("INSERT INTO p2 (id, name) VALUES (300, 'auto')")
assert conn.status == psycopg2.extensions.STATUS_READY
assert count(cur) == 34
conn.close()
print("psycopg2 ok")
