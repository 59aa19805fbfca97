"""asyncpg's Pool with its defaults through pgtenant in transaction mode: 20
workers share one pool over a tenant quota of 3 server connections. asyncpg
prepares every statement (named, cached) and resets each released connection
with `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *; RESET ALL`.
Every transaction must see its own tenant's rows. Prints the backend pids
seen, as JSON, for tests/asyncpg_pool.rs."""
import asyncio
import json
import os

import asyncpg

DSN = os.environ["PGTENANT_DSN"]
EXPECT = os.environ["PGTENANT_EXPECT"]


async def main():
    pool = await asyncpg.create_pool(DSN, min_size=20, max_size=20)
    pids = []

    async def worker(i):
        for n in range(10):
            async with pool.acquire() as con:
                async with con.transaction():
                    row = await con.fetchrow(
                        "SELECT pg_backend_pid() AS pid, "
                        "(SELECT string_agg(name, ',' ORDER BY name) FROM customers) AS names"
                    )
                    assert row["names"] == EXPECT, (i, n, row)
                    pids.append(row["pid"])
                    await con.execute("SET LOCAL work_mem = '8MB'")
                assert await con.fetchval("SELECT $1::int + 1", n) == n + 1
                await con.execute("SET statement_timeout = '5s'")
                assert await con.fetchval("SHOW statement_timeout") == "5s"
            # Released: asyncpg's reset ran; the next acquire starts clean.
            async with pool.acquire() as con:
                assert await con.fetchval("SHOW statement_timeout") == "0"

    await asyncio.gather(*(worker(i) for i in range(20)))
    await pool.close()
    print(json.dumps({"pids": sorted(set(pids)), "transactions": len(pids)}))


asyncio.run(main())
