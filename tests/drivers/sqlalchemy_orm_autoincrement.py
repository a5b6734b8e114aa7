"""The SQLAlchemy 2 ORM as most applications write it, against a running ddb node.

    python3 tests/drivers/sqlalchemy_orm_autoincrement.py SQL_PORT DRIVER

A model with an `Integer` autoincrement primary key (SERIAL) and a server default, created by
`create_all(checkfirst=False)` inside the `engine.begin()` transaction SQLAlchemy uses (DDL in
a transaction block); `session.add` then commit, which needs `INSERT … RETURNING` for the new
keys; a rollback; and `begin_nested` (SAVEPOINT). Needs SERIAL, RETURNING, DDL in
transactions and savepoints (issue 11): tests/drivers.rs runs it as an ignored test until they
are merged. Exits non-zero when a result is not what it must be.
"""
import sys

from sqlalchemy import Integer, String, create_engine, func, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

port, driver = int(sys.argv[1]), sys.argv[2]
# The hstore lookup at connect needs joins over pg_catalog: sqlalchemy_core_orm.py tests that.
engine = create_engine(f"postgresql+{driver}://tester@127.0.0.1:{port}/ddb", use_native_hstore=False)

class Base(DeclarativeBase):
    pass

class Note(Base):
    __tablename__ = "sa_notes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    body: Mapped[str] = mapped_column(String(100))
    state: Mapped[str] = mapped_column(String(10), server_default=text("'new'"))

with engine.begin() as c:
    c.execute(text("DROP TABLE IF EXISTS sa_notes"))
    Base.metadata.create_all(c, checkfirst=False)

with Session(engine) as s:
    notes = [Note(body=f"n{i}") for i in range(5)]
    s.add_all(notes)
    s.commit()
    ids = [n.id for n in notes]
    assert len(set(ids)) == 5 and all(isinstance(i, int) for i in ids), ids
    assert [n.state for n in notes] == ["new"] * 5
with Session(engine) as s:
    s.add(Note(body="undone"))
    s.flush()
    s.rollback()
    assert s.scalar(select(func.count()).select_from(Note)) == 5
with Session(engine) as s:
    s.add(Note(body="outer"))
    nested = s.begin_nested()
    s.add(Note(body="inner, undone"))
    nested.rollback()
    with s.begin_nested():
        s.add(Note(body="inner, kept"))
    s.commit()
    bodies = s.scalars(select(Note.body).where(Note.body.in_(["outer", "inner, undone", "inner, kept"]))
                       .order_by(Note.body)).all()
    assert bodies == ["inner, kept", "outer"], bodies
engine.dispose()
print(f"sqlalchemy {driver} orm autoincrement ok")
