//! Criterion benchmarks of the RDB parser (filled in with the reader).
use criterion::{Criterion, criterion_group, criterion_main};

fn crc(c: &mut Criterion) {
    let data = vec![0x5au8; 1 << 20];
    let mut g = c.benchmark_group("crc64");
    g.throughput(criterion::Throughput::Bytes(data.len() as u64));
    g.bench_function("1MiB", |b| b.iter(|| rdbferry::rdb::crc::crc64(&data)));
    g.finish();
}

criterion_group!(benches, crc);
criterion_main!(benches);
