// TypeORM with its defaults (the pg driver, its pool of 10) through pgtenant
// in transaction mode.
// `typeorm_app.js migrate` (run by `pgtenant migrate --each`): runMigrations()
// / undoLastMigration() / runMigrations() (the seed's migration:run /
// migration:revert); prints the applied migrations as one JSON line.
// `typeorm_app.js`: entity CRUD, a rolled-back transaction, 20 concurrent
// workers; prints one JSON line of results.
// Env: PGHOST, PGPORT, PGUSER, PGDATABASE (and PGPASSWORD on a migrate --each
// route, which pg reads).
require("reflect-metadata");
const { DataSource, EntitySchema } = require("typeorm");

const Item = new EntitySchema({
  name: "Item",
  tableName: "to_items",
  columns: {
    id: { type: Number, primary: true, generated: true },
    name: { type: String },
    qty: { type: Number, default: 0 },
  },
});

// In the shared schema (pgtenant.target_mode = 'shared', as on a migrate --each
// route), rows carry the tenant's id and row-level security isolates them.
const SHARED_RLS = `
DO $$
BEGIN
    IF current_setting('pgtenant.target_mode', true) = 'shared' THEN
        ALTER TABLE to_items ADD COLUMN tenant_id uuid NOT NULL DEFAULT pgtenant.current_tenant();
        ALTER TABLE to_items ENABLE ROW LEVEL SECURITY;
        CREATE POLICY tenant_rows ON to_items
            USING (tenant_id = (SELECT pgtenant.current_tenant()))
            WITH CHECK (tenant_id = (SELECT pgtenant.current_tenant()));
    END IF;
END
$$`;

class CreateItems1700000000000 {
  name = "CreateItems1700000000000";
  async up(q) {
    await q.query("CREATE TABLE to_items (id serial PRIMARY KEY, name text NOT NULL, qty int NOT NULL DEFAULT 0)");
    await q.query(SHARED_RLS);
  }
  async down(q) {
    await q.query("DROP TABLE to_items");
  }
}

class IndexItems1700000000001 {
  name = "IndexItems1700000000001";
  async up(q) {
    await q.query("CREATE INDEX to_items_name ON to_items (name)");
  }
  async down(q) {
    await q.query("DROP INDEX to_items_name");
  }
}

async function main() {
  const ds = new DataSource({
    type: "postgres",
    host: process.env.PGHOST,
    port: Number(process.env.PGPORT),
    username: process.env.PGUSER,
    database: process.env.PGDATABASE,
    entities: [Item],
    migrations: [CreateItems1700000000000, IndexItems1700000000001],
    logging: false,
  });
  await ds.initialize();
  if (process.argv[2] === "migrate") {
    await ds.runMigrations();
    await ds.undoLastMigration();
    await ds.runMigrations();
    const migrated = (await ds.query("SELECT name FROM migrations ORDER BY id")).map((r) => r.name);
    await ds.destroy();
    console.log(JSON.stringify({ migrated }));
    return;
  }
  const repo = ds.getRepository("Item");
  // DELETE, not repo.clear(): TRUNCATE ignores row-level security, and
  // shared tenants are not granted it.
  await repo.createQueryBuilder().delete().execute();
  for (let i = 0; i < 100; i++) await repo.save({ name: `row-${i}`, qty: i });
  const first = await repo.findOneBy({ name: "row-1" });
  await repo.update({ id: first.id }, { qty: 1 });
  try {
    await ds.transaction(async (m) => {
      await m.getRepository("Item").save({ name: "rolled back", qty: 0 });
      throw new Error("roll back");
    });
  } catch (e) {
    if (e.message !== "roll back") throw e;
  }
  if ((await repo.countBy({ name: "rolled back" })) !== 0) throw new Error("rollback kept a row");
  const errors = [];
  await Promise.all(
    Array.from({ length: 20 }, async (_, n) => {
      try {
        for (let k = 0; k < 20; k++) {
          await ds.transaction(async (m) => {
            const r = m.getRepository("Item");
            const it = await r.save({ name: `w${n}`, qty: n });
            await r.update({ id: it.id }, { qty: n + 1 });
            await r.delete({ id: it.id });
          });
        }
      } catch (e) {
        errors.push(`worker ${n}: ${e.message}`);
      }
    }),
  );
  const sum = Number((await ds.query("SELECT sum(qty) AS s FROM to_items"))[0].s);
  await ds.destroy();
  console.log(JSON.stringify({ sum, errors }));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
