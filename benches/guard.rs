//! Cost of the statement guard's pre-filter on every Parse/Query (ordinary
//! queries must pay next to nothing), and of the full check on a statement
//! that passes it.

use criterion::{criterion_group, criterion_main, Criterion};
use pgtenant::sql::{may_touch_session, parsed, statements};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let ordinary: &[u8] = b"SELECT abalance FROM pgbench_accounts WHERE aid = $1;";
    let long: Vec<u8> = b"SELECT c.name, o.amount_cents, o.status FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.created_at > now() - interval '1 day' ORDER BY o.id DESC LIMIT 50".to_vec();
    let mut g = c.benchmark_group("guard");
    g.bench_function("prefilter_pgbench_select", |b| {
        b.iter(|| may_touch_session(black_box(ordinary), false))
    });
    g.bench_function("prefilter_join_query", |b| {
        b.iter(|| may_touch_session(black_box(&long), false))
    });
    let set = "SET search_path = t_other";
    g.bench_function("full_check_set", |b| {
        b.iter(|| {
            let p =
                parsed::parse(black_box(set)).map(|s| parsed::guard(&s, parsed::Guard::Context));
            (p, statements(black_box(set)).len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
