"""SQLAlchemy 2 with its defaults, on psycopg 3 and on asyncpg, through
pgtenant in transaction mode.

`sqlalchemy_app.py migrate` (run by `pgtenant migrate --each`): Alembic
upgrade, downgrade one step, upgrade again; prints the version as one JSON
line. `sqlalchemy_app.py`: ORM CRUD in a Session, a rolled-back transaction,
20 threads (psycopg) and 20 tasks (asyncpg) over the engines' default pools;
prints one JSON line of results.

Env: PGHOST, PGPORT, PGUSER, PGDATABASE (and PGPASSWORD on a migrate --each
route, which libpq reads)."""

import asyncio
import json
import os
import sys
import threading

from alembic import command
from alembic.config import Config
from sqlalchemy import Integer, String, create_engine, func, select, text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

HERE = os.path.dirname(os.path.abspath(__file__))
ADDR = "{PGUSER}@{PGHOST}:{PGPORT}/{PGDATABASE}".format(**os.environ)


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "sa_items"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    qty: Mapped[int] = mapped_column(Integer, default=0)


def alembic(*steps):
    cfg = Config()
    cfg.set_main_option("script_location", os.path.join(HERE, "alembic_app"))
    cfg.set_main_option("sqlalchemy.url", f"postgresql+psycopg://{ADDR}")
    for step, target in steps:
        getattr(command, step)(cfg, target)


if sys.argv[1:] == ["migrate"]:
    alembic(("upgrade", "head"), ("downgrade", "-1"), ("upgrade", "head"))
    with create_engine(f"postgresql+psycopg://{ADDR}").connect() as c:
        version = c.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    print(json.dumps({"alembic": version}))
    sys.exit(0)

engine = create_engine(f"postgresql+psycopg://{ADDR}")
with Session(engine) as s:
    s.execute(text("DELETE FROM sa_items"))
    s.add_all([Item(name=f"row-{i}", qty=i) for i in range(100)])
    s.commit()
    s.add(Item(name="rolled back", qty=0))
    s.flush()
    s.rollback()
    assert s.scalar(select(func.count()).where(Item.name == "rolled back")) == 0

errors = []


def worker(n):
    try:
        for _ in range(20):
            with Session(engine) as s, s.begin():
                it = Item(name=f"t{n}", qty=n)
                s.add(it)
                s.flush()
                it.qty += 1
            with Session(engine) as s, s.begin():
                s.execute(text("DELETE FROM sa_items WHERE name = :n"), {"n": f"t{n}"})
    except Exception as e:  # noqa: BLE001
        errors.append(f"thread {n}: {e!r}")


threads = [threading.Thread(target=worker, args=(n,)) for n in range(20)]
for t in threads:
    t.start()
for t in threads:
    t.join()
with Session(engine) as s:
    psycopg_sum = s.scalar(select(func.sum(Item.qty)))
engine.dispose()


async def with_asyncpg():
    aengine = create_async_engine(f"postgresql+asyncpg://{ADDR}")

    async def task(n):
        try:
            for _ in range(20):
                async with aengine.begin() as c:
                    await c.execute(text("INSERT INTO sa_items(name, qty) VALUES (:n, :q)"), {"n": f"a{n}", "q": n})
                    q = (await c.execute(text("SELECT qty FROM sa_items WHERE name = :n"), {"n": f"a{n}"})).scalar_one()
                    assert q == n
                    await c.execute(text("DELETE FROM sa_items WHERE name = :n"), {"n": f"a{n}"})
        except Exception as e:  # noqa: BLE001
            errors.append(f"task {n}: {e!r}")

    await asyncio.gather(*(task(n) for n in range(20)))
    async with aengine.connect() as c:
        total = (await c.execute(text("SELECT sum(qty) FROM sa_items"))).scalar_one()
    await aengine.dispose()
    return total


asyncpg_sum = asyncio.run(with_asyncpg())
print(json.dumps({"psycopg": psycopg_sum, "asyncpg": asyncpg_sum, "errors": errors}))
