"""asyncpg with its defaults (named prepared statements, a statement cache
per connection; its Pool resets each released connection) through pgtenant
in transaction mode.

`asyncpg_app.py migrate` (run by `pgtenant migrate --each`): the app's own
versioned migrations (a version table, each version in a transaction under
an advisory lock); prints the applied versions as one JSON line.
`asyncpg_app.py`: CRUD, a rolled-back transaction, 20 workers over a Pool of
20; prints one JSON line of results.

Env: PGHOST, PGPORT, PGUSER, PGDATABASE (and PGPASSWORD on a migrate --each
route); asyncpg reads them."""
import asyncio
import json
import sys

import asyncpg

# In the shared schema (pgtenant.target_mode = 'shared', as on a migrate
# --each route), rows carry the tenant's id and row-level security isolates
# them.
MIGRATIONS = [
    """
    CREATE TABLE ap_items (id bigserial PRIMARY KEY, name text NOT NULL, qty int NOT NULL DEFAULT 0);
    DO $$ BEGIN IF current_setting('pgtenant.target_mode', true) = 'shared' THEN
        ALTER TABLE ap_items ADD COLUMN tenant_id uuid NOT NULL DEFAULT pgtenant.current_tenant();
        ALTER TABLE ap_items ENABLE ROW LEVEL SECURITY;
        CREATE POLICY tenant_rows ON ap_items USING (tenant_id = (SELECT pgtenant.current_tenant()))
            WITH CHECK (tenant_id = (SELECT pgtenant.current_tenant()));
    END IF; END $$;
    """,
    "CREATE INDEX ap_items_name ON ap_items (name)",
]


async def migrate():
    con = await asyncpg.connect()
    await con.execute("CREATE TABLE IF NOT EXISTS ap_schema_version (version int PRIMARY KEY)")
    for v, sql in enumerate(MIGRATIONS, start=1):
        async with con.transaction():
            await con.execute("SELECT pg_advisory_xact_lock(74203)")
            if not await con.fetchval("SELECT EXISTS (SELECT 1 FROM ap_schema_version WHERE version = $1)", v):
                await con.execute(sql)
                await con.execute("INSERT INTO ap_schema_version (version) VALUES ($1)", v)
    versions = [r["version"] for r in await con.fetch("SELECT version FROM ap_schema_version ORDER BY version")]
    await con.close()
    print(json.dumps({"migrated": versions}))


async def app():
    pool = await asyncpg.create_pool(min_size=20, max_size=20)
    await pool.execute("DELETE FROM ap_items")
    await pool.executemany("INSERT INTO ap_items (name, qty) VALUES ($1, $2)", [(f"row-{i}", i) for i in range(100)])
    async with pool.acquire() as con:
        try:
            async with con.transaction():
                await con.execute("INSERT INTO ap_items (name) VALUES ('rolled back')")
                raise RuntimeError("roll back")
        except RuntimeError:
            pass
        assert await con.fetchval("SELECT count(*) FROM ap_items WHERE name = 'rolled back'") == 0
    errors = []

    async def worker(n):
        try:
            for _ in range(20):
                async with pool.acquire() as con, con.transaction():
                    i = await con.fetchval("INSERT INTO ap_items (name, qty) VALUES ($1, $2) RETURNING id", f"w{n}", n)
                    await con.execute("UPDATE ap_items SET qty = qty + 1 WHERE id = $1", i)
                    await con.execute("DELETE FROM ap_items WHERE id = $1", i)
        except Exception as e:  # noqa: BLE001
            errors.append(f"worker {n}: {e!r}")

    await asyncio.gather(*(worker(n) for n in range(20)))
    total = await pool.fetchval("SELECT sum(qty) FROM ap_items")
    await pool.close()
    print(json.dumps({"sum": total, "errors": errors}))


asyncio.run(migrate() if sys.argv[1:] == ["migrate"] else app())
