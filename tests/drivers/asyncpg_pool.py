"""asyncpg against a running ddb node, with the driver's defaults.

    pip install asyncpg
    python3 tests/drivers/asyncpg_pool.py SQL_PORT

A `create_pool(min_size=2, max_size=5)` acquired and released 240 times from 12 concurrent
tasks (each release runs asyncpg's reset query), prepared statements executed many times,
`transaction()` blocks that commit and that roll back on an exception, and round trips of the
types ddb has, in asyncpg's binary format. Exits non-zero when a result is not what it must be.
"""
import asyncio
import datetime
import sys

import asyncpg

port = int(sys.argv[1])
dsn = f"postgresql://tester@127.0.0.1:{port}/ddb"

async def main():
    setup = await asyncpg.connect(dsn)
    assert (await setup.fetchval("SELECT version()")).startswith("ddb")
    await setup.execute("DROP TABLE IF EXISTS ap")
    await setup.execute("CREATE TABLE ap (id BIGINT PRIMARY KEY, worker INT, n INT, name TEXT)")
    await setup.close()

    pool = await asyncpg.create_pool(dsn, min_size=2, max_size=5)
    # The rows the workers read, written in one transaction (one commit, not 240).
    async with pool.acquire() as c:
        async with c.transaction():
            await c.executemany("INSERT INTO ap VALUES ($1, $2, $3, $4)",
                                [(w * 100 + i, w, i, f"t{w}.{i}") for w in range(12) for i in range(20)])
    acquired = 0

    async def worker(w):
        nonlocal acquired
        for i in range(20):
            async with pool.acquire() as c:
                acquired += 1
                # Session state set here must not leak to the next user of this connection.
                assert await c.fetchval("SHOW application_name") != "dirty"
                await c.execute("SET application_name = 'dirty'")
                got = await c.fetchrow("SELECT worker, n, name FROM ap WHERE id = $1", w * 100 + i)
                assert tuple(got) == (w, i, f"t{w}.{i}"), got
                if i % 5 == 0:
                    status = await c.execute("UPDATE ap SET n = n + 100 WHERE id = $1", w * 100 + i)
                    assert status == "UPDATE 1", status

    await asyncio.gather(*(worker(w) for w in range(12)))
    assert acquired == 240
    assert await pool.fetchval("SELECT count(*) FROM ap") == 240
    assert await pool.fetchval("SELECT count(*) FROM ap WHERE n >= 100") == 48
    rows = await pool.fetch("SELECT worker, count(*) AS n FROM ap GROUP BY worker ORDER BY worker")
    assert [(r["worker"], r["n"]) for r in rows] == [(w, 20) for w in range(12)], rows

    async with pool.acquire() as c:
        # A prepared statement (a named server-side statement), executed many times.
        stmt = await c.prepare("SELECT name FROM ap WHERE worker = $1 AND n = $2")
        assert [a.name for a in stmt.get_attributes()] == ["name"]
        for i in range(1, 20):
            if i % 5:
                assert await stmt.fetchval(3, i) == f"t3.{i}"
        upd = await c.prepare("UPDATE ap SET name = $1 WHERE id = $2")
        for i in range(10):
            assert await upd.fetchval(f"u{i}", i) is None
        assert await c.fetchval("SELECT count(*) FROM ap WHERE name LIKE 'u%'") == 10
        await c.executemany("DELETE FROM ap WHERE id = $1", [(i,) for i in range(5)])
        assert await c.fetchval("SELECT count(*) FROM ap") == 235

        # transaction(): committed on success, rolled back on an exception.
        async with c.transaction():
            await c.execute("INSERT INTO ap VALUES (10000, 0, 0, 'kept')")
        try:
            async with c.transaction():
                await c.execute("INSERT INTO ap VALUES (10001, 0, 0, 'undone')")
                raise RuntimeError("application error")
        except RuntimeError:
            pass
        # A failing statement inside transaction(): the block raises and rolls back.
        try:
            async with c.transaction():
                await c.execute("INSERT INTO ap VALUES (10002, 0, 0, 'undone too')")
                await c.execute("INSERT INTO ap VALUES (10000, 0, 0, 'duplicate')")
            raise AssertionError("a duplicate key was accepted")
        except asyncpg.UniqueViolationError as e:
            assert e.sqlstate == "23505", e.sqlstate
        assert not c.is_in_transaction()
        got = await c.fetch("SELECT id, name FROM ap WHERE id >= 10000 ORDER BY id")
        assert [tuple(r) for r in got] == [(10000, "kept")], got

        # Type round trips through parameters and results, in binary.
        await c.execute("DROP TABLE IF EXISTS aty")
        await c.execute("CREATE TABLE aty (id INT PRIMARY KEY, s SMALLINT, b BIGINT, r REAL, d DOUBLE PRECISION, "
                        "t TEXT, v VARCHAR(10), ok BOOLEAN, ts TIMESTAMP)")
        ts = datetime.datetime(2024, 2, 29, 13, 45, 6, 123456)
        values = (1, -32768, 9223372036854775807, 1.5, -2.25e300, "héllo 'quoted'", "short", False, ts)
        await c.execute("INSERT INTO aty VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)", *values)
        await c.execute("INSERT INTO aty (id) VALUES (2)")
        got = await c.fetch("SELECT id, s, b, r, d, t, v, ok, ts FROM aty ORDER BY id")
        assert tuple(got[0]) == values, got[0]
        assert tuple(got[1]) == (2,) + (None,) * 8, got[1]
        assert await c.fetchval("SELECT $1::bigint + 1", 41) == 42
        assert await c.fetchval("SELECT $1::text", "x") == "x"

        # A syntax error is PostgresSyntaxError with its SQLSTATE; the connection goes on.
        try:
            await c.execute("SELEKT 1")
            raise AssertionError("a syntax error ran")
        except asyncpg.PostgresSyntaxError as e:
            assert e.sqlstate == "42601", e.sqlstate
        assert await c.fetchval("SELECT 1") == 1

    await pool.close()
    print("asyncpg pool ok: 240 acquires")

asyncio.run(main())
