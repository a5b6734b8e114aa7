"""Nested transactions (SAVEPOINT) as asyncpg and psycopg 3 write them, against a running node.

    python3 tests/drivers/nested_transactions.py SQL_PORT

asyncpg's `transaction()` inside another and psycopg 3's `conn.transaction()` inside another
send SAVEPOINT, ROLLBACK TO SAVEPOINT and RELEASE SAVEPOINT. Needs savepoints (issue 11,
point 3): tests/drivers.rs runs it as an ignored test until they are merged. Exits non-zero
when a result is not what it must be.
"""
import asyncio
import sys

import asyncpg
import psycopg

port = int(sys.argv[1])

async def with_asyncpg():
    c = await asyncpg.connect(f"postgresql://tester@127.0.0.1:{port}/ddb")
    await c.execute("DROP TABLE IF EXISTS nta")
    await c.execute("CREATE TABLE nta (id INT PRIMARY KEY)")
    async with c.transaction():
        await c.execute("INSERT INTO nta VALUES (1)")
        try:
            async with c.transaction():
                await c.execute("INSERT INTO nta VALUES (2)")
                await c.execute("INSERT INTO nta VALUES (1)")  # duplicate: the savepoint rolls back
        except asyncpg.UniqueViolationError:
            pass
        async with c.transaction():
            await c.execute("INSERT INTO nta VALUES (3)")
    assert [r[0] for r in await c.fetch("SELECT id FROM nta ORDER BY id")] == [1, 3]
    await c.close()

def with_psycopg():
    with psycopg.connect(f"host=127.0.0.1 port={port} user=tester dbname=ddb", autocommit=True) as c:
        c.execute("DROP TABLE IF EXISTS ntp")
        c.execute("CREATE TABLE ntp (id INT PRIMARY KEY)")
        with c.transaction():
            c.execute("INSERT INTO ntp VALUES (1)")
            try:
                with c.transaction():
                    c.execute("INSERT INTO ntp VALUES (2)")
                    raise KeyError("application error")
            except KeyError:
                pass
            with c.transaction():
                c.execute("INSERT INTO ntp VALUES (3)")
        assert [r[0] for r in c.execute("SELECT id FROM ntp ORDER BY id")] == [1, 3]

asyncio.run(with_asyncpg())
with_psycopg()
print("nested transactions ok")
