//! Criterion benchmarks of the RDB reader and the sinks, throughput in input bytes.
//!
//! Inputs: every `testdata/*/*.rdb` (real files written by Redis 6.0, 6.2 and 7.0; small, so
//! they mostly measure per-record costs), and `synthetic-50MB`, made in memory with
//! `rdbferry::rdb::encoder` at start-up: ~60% strings of ~100 bytes, small listpack hashes,
//! quicklist-2 lists, intsets and listpack sets, listpack zsets, some TTLs; the mix of
//! `scripts/gen-bench-data.py mixed`, without needing a server.
//!
//! For each input: `walk` (RdbReader only: records found, values skipped, checksum),
//! `validate` (walk + `Value::validate()` on every value, what `check` does), `jsonl` and `resp`
//! (walk + the sink, writing into `std::io::sink()`). Plus CRC-64 alone.
//!
//! Run: `cargo bench --bench parse` (filter with e.g. `-- synthetic`).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};

use rdbferry::rdb::encoder::{RdbWriter, value};
use rdbferry::rdb::{RdbReader, Record};
use rdbferry::sink::Sink;
use rdbferry::sink::jsonl::JsonlSink;
use rdbferry::sink::resp::RespSink;

/// The real files under testdata/.
fn testdata() -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("testdata/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|d| d.is_dir())
        .flat_map(|d| std::fs::read_dir(d).into_iter().flatten())
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "rdb"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p
                .strip_prefix(&root)
                .unwrap_or(&p)
                .display()
                .to_string()
                .replace('/', "_");
            (name, std::fs::read(&p).expect("readable test file"))
        })
        .collect()
}

/// Xorshift: deterministic filler without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn text(&mut self, len: usize) -> Vec<u8> {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        (0..len).map(|_| A[(self.next() >> 58) as usize]).collect()
    }
}

/// An RDB of about `target` bytes shaped like the `mixed` benchmark dataset.
fn synthetic(target: usize) -> Vec<u8> {
    let mut w = RdbWriter::new(10);
    w.aux("redis-ver", b"7.0.15").select_db(0);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut approx = 0usize;
    let mut i = 0u64;
    while approx < target {
        let r = rng.below(100);
        let ttl = (rng.below(5) == 0).then_some(4_102_444_800_000 + i as i64);
        let (key, v) = if r < 60 {
            let len = 80 + rng.below(41) as usize;
            (format!("str:{i:09}"), value::string(&rng.text(len), false))
        } else if r < 70 {
            let n = 3 + rng.below(6) as usize;
            let fields: Vec<Vec<u8>> = (0..n).map(|f| format!("field{f}").into_bytes()).collect();
            let vals: Vec<Vec<u8>> = (0..n)
                .map(|_| {
                    let len = 10 + rng.below(21) as usize;
                    rng.text(len)
                })
                .collect();
            let pairs: Vec<(&[u8], &[u8])> = fields
                .iter()
                .zip(&vals)
                .map(|(f, v)| (f.as_slice(), v.as_slice()))
                .collect();
            (format!("hash:{i:09}"), value::hash_listpack(&pairs))
        } else if r < 80 {
            let n = 4 + rng.below(9) as usize;
            let items: Vec<Vec<u8>> = (0..n)
                .map(|_| {
                    let len = 10 + rng.below(21) as usize;
                    rng.text(len)
                })
                .collect();
            let node = value::Node::Packed(items.iter().map(|v| v.as_slice()).collect());
            (
                format!("list:{i:09}"),
                value::list_quicklist2(&[node], false),
            )
        } else if r < 90 {
            let n = 4 + rng.below(9) as usize;
            if rng.below(2) == 0 {
                let mut ints: Vec<i64> = (0..n).map(|_| rng.below(1 << 40) as i64).collect();
                ints.sort_unstable();
                ints.dedup();
                (format!("set:{i:09}"), value::set_intset(&ints))
            } else {
                let items: Vec<Vec<u8>> = (0..n)
                    .map(|_| {
                        let len = 10 + rng.below(15) as usize;
                        rng.text(len)
                    })
                    .collect();
                let refs: Vec<&[u8]> = items.iter().map(|v| v.as_slice()).collect();
                (format!("set:{i:09}"), value::set_listpack(&refs))
            }
        } else {
            let n = 4 + rng.below(9) as usize;
            let members: Vec<Vec<u8>> = (0..n)
                .map(|_| {
                    let len = 8 + rng.below(13) as usize;
                    rng.text(len)
                })
                .collect();
            let items: Vec<(&[u8], f64)> = members
                .iter()
                .map(|m| (m.as_slice(), rng.below(1_000_000_000) as f64 / 1000.0))
                .collect();
            (format!("zset:{i:09}"), value::zset_listpack(&items))
        };
        approx += key.len() + v.bytes.len() + 2 + if ttl.is_some() { 9 } else { 0 };
        w.key(key.as_bytes(), ttl, &v);
        i += 1;
    }
    w.finish()
}

fn walk(data: &[u8]) -> u64 {
    let mut n = 0;
    for rec in RdbReader::new(data, "bench").expect("valid header") {
        if let Record::Key(k) = rec.expect("valid record") {
            n += k.raw.len() as u64;
        }
    }
    n
}

fn validate(data: &[u8]) -> u64 {
    let mut n = 0;
    for rec in RdbReader::new(data, "bench").expect("valid header") {
        if let Record::Key(k) = rec.expect("valid record") {
            n += k.value().and_then(|v| v.validate()).expect("valid value");
        }
    }
    n
}

fn convert(data: &[u8], sink: &mut dyn Sink) {
    for rec in RdbReader::new(data, "bench").expect("valid header") {
        match rec.expect("valid record") {
            Record::Key(k) => sink.key(&k).expect("sink accepts the key"),
            Record::Function { code } => sink.function(&code).expect("sink accepts the function"),
            _ => {}
        }
    }
    sink.finish().expect("sink flushes");
}

fn bench_file(g: &mut BenchmarkGroup<'_, WallTime>, name: &str, data: &[u8]) {
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function(format!("{name}/walk"), |b| b.iter(|| walk(black_box(data))));
    g.bench_function(format!("{name}/validate"), |b| {
        b.iter(|| validate(black_box(data)))
    });
    g.bench_function(format!("{name}/jsonl"), |b| {
        b.iter(|| {
            convert(
                black_box(data),
                &mut JsonlSink::new(std::io::sink(), "sink"),
            )
        })
    });
    g.bench_function(format!("{name}/resp"), |b| {
        b.iter(|| convert(black_box(data), &mut RespSink::new(std::io::sink(), "sink")))
    });
}

fn real_files(c: &mut Criterion) {
    let mut g = c.benchmark_group("testdata");
    for (name, data) in testdata() {
        bench_file(&mut g, &name, &data);
    }
    g.finish();
}

fn synthetic_file(c: &mut Criterion) {
    let data = synthetic(50 << 20);
    let mut g = c.benchmark_group("synthetic");
    // A pass over 50 MB takes a good fraction of a second: fewer, longer samples.
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    bench_file(&mut g, "synthetic-50MB", &data);
    g.finish();
}

fn crc(c: &mut Criterion) {
    let data = vec![0x5au8; 1 << 20];
    let mut g = c.benchmark_group("crc64");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("1MiB", |b| {
        b.iter(|| rdbferry::rdb::crc::crc64(black_box(&data)))
    });
    g.finish();
}

criterion_group!(benches, crc, real_files, synthetic_file);
criterion_main!(benches);
