//! Cost of finding message boundaries on the relay's hot path: a pgbench-like
//! select reply (RowDescription, DataRow, CommandComplete, ReadyForQuery) and a
//! large COPY stream, scanned the way the relay does it.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pgtenant::protocol::frame::{server_peek, Flow, FrameScanner};
use std::hint::black_box;

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn select_reply() -> Vec<u8> {
    let mut v = msg(b'1', b"");
    v.extend(msg(b'2', b""));
    v.extend(msg(b'T', &[0u8; 27]));
    v.extend(msg(b'D', &[0u8; 12]));
    v.extend(msg(b'C', b"SELECT 1\0"));
    v.extend(msg(b'Z', b"I"));
    v
}

fn bench(c: &mut Criterion) {
    let reply = select_reply();
    let mut g = c.benchmark_group("frame_scan");
    g.throughput(Throughput::Elements(6));
    g.bench_function("select_reply_6_messages", |b| {
        b.iter(|| {
            let mut sc = FrameScanner::new();
            let mut rfq = 0u8;
            let r = sc.scan(black_box(&reply), 0, server_peek, |tag, peek| {
                if tag == b'Z' {
                    rfq = peek[0];
                }
                Flow::Continue
            });
            black_box((r, rfq))
        })
    });
    let mut copy = Vec::new();
    for _ in 0..1000 {
        copy.extend(msg(b'd', &[b'x'; 60]));
    }
    g.throughput(Throughput::Bytes(copy.len() as u64));
    g.bench_function("copy_data_64kb", |b| {
        b.iter(|| {
            let mut sc = FrameScanner::new();
            black_box(sc.scan(black_box(&copy), 0, server_peek, |_, _| Flow::Continue))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
