// node-postgres (`pg`) through pgtenant in transaction mode: named queries
// ({ name, text, values }) from a pool bigger than the tenant's quota,
// transactions with rollback, an error then recovery, large values; and the
// seed's express-style handler that picks the tenant from `x-tenant`, rewritten
// to connect as app.<tenant> with identical SQL for every tenant.
const assert = require('assert');
const { Pool } = require('pg');

const base = { host: '127.0.0.1', port: Number(process.env.PGTENANT_PORT), database: 'dm_app' };
const pools = {};
function poolFor(tenant) {
  if (!pools[tenant]) pools[tenant] = new Pool({ ...base, user: `app.${tenant}`, max: 20 });
  return pools[tenant];
}

// The seed's handler, minus its tenant plumbing.
async function customerOrders(req) {
  const pool = poolFor(req.headers['x-tenant']);
  const { rows } = await pool.query({
    name: 'customer-orders',
    text: `SELECT c.name, count(o.id)::int AS orders
             FROM customers c LEFT JOIN orders o ON o.customer_id = c.id
            GROUP BY c.name ORDER BY c.name`,
    values: [],
  });
  return rows;
}

async function worker(i) {
  const client = await poolFor('jsdrv').connect();
  try {
    for (let n = 0; n < 15; n++) {
      await client.query('BEGIN');
      const r = await client.query({ name: 'ins', text: 'INSERT INTO js_items(owner, note) VALUES ($1, $2) RETURNING id', values: [i, `n${n}`] });
      assert(r.rows[0].id > 0);
      const s = await client.query({ name: 'sel', text: 'SELECT name FROM customers WHERE id = $1', values: [1] });
      assert.strictEqual(s.rows[0].name, 'Driver');
      await client.query(n % 5 === 0 ? 'ROLLBACK' : 'COMMIT');
    }
    await client.query('BEGIN');
    await assert.rejects(client.query('SELECT * FROM no_such_table'), /does not exist/);
    await client.query('ROLLBACK');
    const ok = await client.query({ name: 'add', text: 'SELECT $1::int + 1 AS v', values: [41] });
    assert.strictEqual(ok.rows[0].v, 42);
  } finally {
    client.release();
  }
}

async function main() {
  const pool = poolFor('jsdrv');
  const big = 'q'.repeat(10 * 1024 * 1024);
  const blob = Buffer.from(Array.from({ length: 100000 }, (_, k) => k % 256));
  const r = await pool.query('INSERT INTO js_items(owner, note, blob) VALUES (-1, $1, $2) RETURNING length(note) AS n, blob', [big, blob]);
  assert.strictEqual(r.rows[0].n, big.length);
  assert(Buffer.compare(r.rows[0].blob, blob) === 0);
  await Promise.all(Array.from({ length: 20 }, (_, i) => worker(i)));
  const kept = await pool.query("SELECT count(*)::int AS n FROM js_items WHERE note LIKE 'n%'");
  assert.strictEqual(kept.rows[0].n, 20 * 12);
  const a = await customerOrders({ headers: { 'x-tenant': 'jsa' } });
  const b = await customerOrders({ headers: { 'x-tenant': 'jsb' } });
  assert.deepStrictEqual(a, [{ name: 'Alpha Co', orders: 2 }]);
  assert.deepStrictEqual(b, [{ name: 'Beta Co', orders: 1 }]);
  await Promise.all(Object.values(pools).map((p) => p.end()));
  console.log('node-postgres scenario ok');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
