"""What Python drivers send on their own, against a running ddb node.

asyncpg's pool reset (pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL), psycopg 3's
DEALLOCATE ALL after a rollback with auto-prepared statements, and SQLAlchemy 2's version
parse of `select pg_catalog.version()` with the psycopg and asyncpg dialects.

    pip install asyncpg 'psycopg[binary]' 'sqlalchemy[asyncio]'
    python3 tests/drivers/session.py SQL_PORT

Exits non-zero (an assertion or a driver error) when a driver does not get what it needs.
"""
import asyncio, sys
import asyncpg, psycopg, sqlalchemy

port = int(sys.argv[1])

async def asyncpg_pool():
    pool = await asyncpg.create_pool(host="127.0.0.1", port=port, user="tester", database="ddb", min_size=1, max_size=1)
    async with pool.acquire() as c:
        await c.execute("SET application_name = 'inpool'")
        assert await c.fetchval("SHOW application_name") == "inpool"
    # Release ran the reset query (pg_advisory_unlock_all, CLOSE ALL, UNLISTEN *, RESET ALL).
    async with pool.acquire() as c:
        v = await c.fetchval("SHOW application_name")
        assert v != "inpool", v
        print("asyncpg pool reset ok; server_version", c.get_server_version())
    await pool.close()

def psycopg3():
    with psycopg.connect(f"host=127.0.0.1 port={port} user=tester dbname=ddb", prepare_threshold=1) as c:
        print("psycopg server_version", c.info.server_version)
        # ddb runs DDL outside transaction blocks only.
        with psycopg.connect(f"host=127.0.0.1 port={port} user=tester dbname=ddb", autocommit=True) as a:
            a.execute("DROP TABLE IF EXISTS pz")
            a.execute("CREATE TABLE pz (id INT PRIMARY KEY, v INT)")
        for i in range(6):
            c.execute("INSERT INTO pz VALUES (%s, %s)", (i, i))
        c.rollback()  # psycopg sends DEALLOCATE ALL here after auto-prepare
        for i in range(6):
            c.execute("INSERT INTO pz VALUES (%s, %s)", (i, i))
        c.commit()
        print("psycopg rows", c.execute("SELECT count(*) FROM pz").fetchone())

def sqla(driver):
    url = f"postgresql+{driver}://tester@127.0.0.1:{port}/ddb"
    # The psycopg dialect looks up hstore inside a SAVEPOINT, which ddb does not have yet.
    kw = {"use_native_hstore": False} if driver == "psycopg" else {}
    e = sqlalchemy.create_engine(url, **kw)
    with e.connect() as c:
        print(driver, "dialect server_version_info", e.dialect.server_version_info,
              c.execute(sqlalchemy.text("select 1")).scalar())
    e.dispose()

asyncio.run(asyncpg_pool())
psycopg3()
sqla("psycopg")
async def sqla_async():
    from sqlalchemy.ext.asyncio import create_async_engine
    e = create_async_engine(f"postgresql+asyncpg://tester@127.0.0.1:{port}/ddb")
    async with e.connect() as c:
        v = (await c.execute(sqlalchemy.text("select 1"))).scalar()
        print("asyncpg dialect server_version_info", e.dialect.server_version_info, v)
    await e.dispose()

asyncio.run(sqla_async())
print("all drivers ok")
