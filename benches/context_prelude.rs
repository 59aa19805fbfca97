//! Cost, on pgtenant's side, of writing a shared link's tenant context on
//! every checkout: three FunctionCalls of set_config and a Close (what
//! pgtenant sends) against the Parse/Bind/Execute/Close/Sync it replaced. (The server's side,
//! no parse or plan, is the larger win: see README "Performance".)

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion};
use pgtenant::protocol::extended;
use pgtenant::protocol::tag::frontend as fe;
use std::hint::black_box;

const SET_CONFIG_OID: u32 = 2078;

fn bench(c: &mut Criterion) {
    let path: &[u8] = b"\"t_acme\", public";
    let id: &[u8] = b"6f1c2a3e-0d7b-4f5e-9a1b-2c3d4e5f6a7b";
    let sig = [b'a'; 64];
    let mut out = BytesMut::with_capacity(1024);
    let mut g = c.benchmark_group("context_prelude");
    g.bench_function("function_calls", |b| {
        b.iter(|| {
            out.clear();
            for (name, value) in [
                (&b"search_path"[..], path),
                (b"pgtenant.tenant_id", id),
                (b"pgtenant.tenant_sig", &sig[..]),
            ] {
                extended::function_call_text(
                    &mut out,
                    SET_CONFIG_OID,
                    &[name, black_box(value), b"false"],
                );
            }
            // No Sync: the client's first message ends the batch.
            extended::describe_or_close(&mut out, fe::CLOSE, extended::STATEMENT, b"");
            out.len()
        })
    });
    g.bench_function("parse_bind_execute", |b| {
        b.iter(|| {
            out.clear();
            extended::parse_query(
                &mut out,
                b"",
                "SELECT pg_catalog.set_config('search_path', $1, false), \
                 pg_catalog.set_config('pgtenant.tenant_id', $2, false), \
                 pg_catalog.set_config('pgtenant.tenant_sig', $3, false)",
            );
            extended::bind_text(&mut out, &[black_box(path), id, &sig]);
            extended::execute(&mut out);
            extended::describe_or_close(&mut out, fe::CLOSE, extended::STATEMENT, b"");
            extended::sync(&mut out);
            out.len()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
