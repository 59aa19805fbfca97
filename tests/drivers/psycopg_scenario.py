"""psycopg 3 through pgtenant in transaction mode: prepared statements on every
query (prepare_threshold=0) across more clients than server connections,
transactions with rollback, an error then recovery, pipeline mode, COPY both
ways, a 10 MB text value and a bytea. Run by tests/drivers.rs."""
import asyncio
import os

import psycopg

DSN = os.environ["PGTENANT_DSN"]


async def connect():
    return await psycopg.AsyncConnection.connect(DSN, prepare_threshold=0, autocommit=True)


async def worker(i):
    async with await connect() as conn:
        for n in range(15):
            async with conn.transaction():
                cur = await conn.execute(
                    "INSERT INTO py_items(owner, note) VALUES (%s, %s) RETURNING id", (i, f"n{n}")
                )
                assert (await cur.fetchone())[0] > 0
                cur = await conn.execute("SELECT name FROM customers WHERE id = %s", (1,))
                assert (await cur.fetchone())[0] == "Driver"
        try:
            async with conn.transaction():
                await conn.execute("INSERT INTO py_items(owner, note) VALUES (%s, 'rolled back')", (i,))
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
        try:
            async with conn.transaction():
                await conn.execute("SELECT * FROM no_such_table")
        except psycopg.errors.UndefinedTable:
            pass
        cur = await conn.execute("SELECT %s::int + 1", (41,))
        assert (await cur.fetchone())[0] == 42
        async with conn.pipeline():
            curs = [await conn.execute("SELECT %s::int * 2", (k,)) for k in range(5)]
        for k, c in enumerate(curs):
            assert (await c.fetchone())[0] == k * 2
    return i


async def main():
    async with await connect() as conn:
        big = "z" * (10 * 1024 * 1024)
        blob = bytes(range(256)) * 1000
        cur = await conn.execute(
            "INSERT INTO py_items(owner, note, blob) VALUES (-1, %s, %s) RETURNING length(note), blob",
            (big, blob),
        )
        length, back = await cur.fetchone()
        assert length == len(big) and bytes(back) == blob
        async with conn.cursor() as cur:
            async with cur.copy("COPY py_copied (n, label) FROM STDIN") as copy:
                for n in range(5000):
                    await copy.write_row((n, f"label {n}"))
            rows = []
            async with cur.copy("COPY (SELECT n FROM py_copied ORDER BY n) TO STDOUT") as copy:
                async for row in copy.rows():
                    rows.append(row)
            assert len(rows) == 5000, len(rows)
    done = await asyncio.gather(*(worker(i) for i in range(20)))
    assert sorted(done) == list(range(20))
    async with await connect() as conn:
        cur = await conn.execute("SELECT count(*) FROM py_items WHERE note LIKE 'n%%'")
        assert (await cur.fetchone())[0] == 20 * 15
    print("psycopg scenario ok")


asyncio.run(main())
