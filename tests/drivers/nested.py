"""Nested transactions (savepoints) and DDL in transactions, as drivers do them, against a
running standalone ddb node: asyncpg's nested `transaction()`, psycopg 3's nested
`transaction()` blocks, and SQLAlchemy 2's `begin_nested()` and a `create_all` that runs
its DDL inside a transaction. Each step asserts the rows that must (and must not) be there.

    python3 tests/drivers/nested.py SQL_PORT
"""
import asyncio, sys
import asyncpg, psycopg, sqlalchemy

port = int(sys.argv[1])

async def asyncpg_nested():
    c = await asyncpg.connect(host="127.0.0.1", port=port, user="tester", database="ddb")
    async with c.transaction():
        # DDL in the same transaction as the rows.
        await c.execute("CREATE TABLE an (id INT PRIMARY KEY, v TEXT)")
        await c.execute("INSERT INTO an VALUES (1, 'outer')")
        try:
            async with c.transaction():  # SAVEPOINT
                await c.execute("INSERT INTO an VALUES (2, 'inner')")
                await c.execute("INSERT INTO an VALUES (1, 'duplicate')")
        except asyncpg.UniqueViolationError:
            pass  # ROLLBACK TO SAVEPOINT: the outer transaction goes on
        async with c.transaction():
            await c.execute("INSERT INTO an VALUES (3, 'released')")
    rows = await c.fetch("SELECT id, v FROM an ORDER BY id")
    assert [tuple(r) for r in rows] == [(1, "outer"), (3, "released")], rows
    await c.close()
    print("asyncpg nested ok")

def psycopg_nested():
    with psycopg.connect(f"host=127.0.0.1 port={port} user=tester dbname=ddb") as c:
        with c.transaction():
            c.execute("CREATE TABLE pn (id INT PRIMARY KEY)")
            c.execute("INSERT INTO pn VALUES (1)")
            try:
                with c.transaction():
                    c.execute("INSERT INTO pn VALUES (2)")
                    c.execute("SELECT 1 / 0")
            except psycopg.errors.DivisionByZero:
                pass
            with c.transaction():
                c.execute("INSERT INTO pn VALUES (3)")
        ids = [r[0] for r in c.execute("SELECT id FROM pn ORDER BY id")]
        assert ids == [1, 3], ids
        # A rolled-back transaction takes its DDL along.
        try:
            with c.transaction():
                c.execute("CREATE TABLE pn_lost (id INT PRIMARY KEY)")
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
        try:
            c.execute("SELECT * FROM pn_lost")
            raise AssertionError("pn_lost exists")
        except psycopg.errors.UndefinedTable:
            c.rollback()
    print("psycopg nested ok")

def sqlalchemy_nested():
    e = sqlalchemy.create_engine(f"postgresql+psycopg://tester@127.0.0.1:{port}/ddb")
    md = sqlalchemy.MetaData()
    t = sqlalchemy.Table("sn", md,
        sqlalchemy.Column("id", sqlalchemy.Integer, primary_key=True, autoincrement=False),
        sqlalchemy.Column("v", sqlalchemy.Text))
    # create_all runs its DDL in a transaction (checkfirst needs catalogs ddb may lack).
    md.create_all(e, checkfirst=False)
    with e.connect() as c:
        with c.begin():
            c.execute(t.insert(), [{"id": 1, "v": "a"}])
            nested = c.begin_nested()
            c.execute(t.insert(), [{"id": 2, "v": "b"}])
            nested.rollback()
            with c.begin_nested():
                c.execute(t.insert(), [{"id": 3, "v": "c"}])
        rows = c.execute(sqlalchemy.select(t.c.id, t.c.v).order_by(t.c.id)).all()
        assert [tuple(r) for r in rows] == [(1, "a"), (3, "c")], rows
    e.dispose()
    print("sqlalchemy begin_nested ok")

asyncio.run(asyncpg_nested())
psycopg_nested()
sqlalchemy_nested()
print("all nested ok")
