// TypeORM with its defaults (the pg driver, its pool of 10) through pgtenant
// in transaction mode: migrations with runMigrations() / undoLastMigration()
// (the seed's migration:run / migration:revert), entity CRUD, a rolled-back
// transaction, 20 concurrent workers. Prints one JSON line of results.
// Env: PGHOST, PGPORT, PGUSER, PGDATABASE (the tenant's route).
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

class CreateItems1700000000000 {
  name = "CreateItems1700000000000";
  async up(q) {
    await q.query("CREATE TABLE to_items (id serial PRIMARY KEY, name text NOT NULL, qty int NOT NULL DEFAULT 0)");
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
  await ds.runMigrations();
  await ds.undoLastMigration();
  await ds.runMigrations();
  const repo = ds.getRepository("Item");
  await repo.clear();
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
  const migrations = (await ds.query("SELECT name FROM migrations ORDER BY id")).map((r) => r.name);
  await ds.destroy();
  console.log(JSON.stringify({ sum, migrations, errors }));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
