//! carehare-core's frame codec against amq-protocol's (lapin's), on the same
//! bytes. Run: `cargo bench --bench codec -- --warm-up-time 1 --measurement-time 3`.

use bytes::{Bytes, BytesMut};
use carehare_benches::{
    amq_decode_all, amq_publish, carehare_decode_all, carehare_publish_chunks, deliver_stream,
};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

const SIZES: [(usize, &str, usize); 3] = [
    (12, "12B", 1000),
    (1024, "1KiB", 1000),
    (128 * 1024, "128KiB", 16),
];

fn decode(c: &mut Criterion) {
    for (len, name, n) in SIZES {
        let body = vec![0xAB; len];
        let stream = deliver_stream(n, &body);
        let mut g = c.benchmark_group(format!("decode/{name}"));
        g.throughput(Throughput::Elements(n as u64));
        // The copy into a fresh BytesMut (carehare consumes its input
        // buffer) is setup, outside the timing; amq-protocol parses a slice.
        g.bench_function("carehare", |b| {
            b.iter_batched_ref(
                || BytesMut::from(&stream[..]),
                |buf| black_box(carehare_decode_all(buf)),
                BatchSize::LargeInput,
            )
        });
        g.bench_function("amq-protocol", |b| {
            b.iter(|| black_box(amq_decode_all(black_box(&stream))))
        });
        g.finish();
    }
}

fn encode(c: &mut Criterion) {
    for (len, name, _) in SIZES {
        let body = vec![0xAB; len];
        let mut g = c.benchmark_group(format!("encode/{name}"));
        g.throughput(Throughput::Elements(1));
        // As the client's write path does: the frames go into a reused
        // buffer; a body of at least 8 KiB is not copied but queued as a
        // slice of the caller's `Bytes`, for a vectored write. The chunks
        // are dropped each iteration, as after a write.
        let shared_body = Bytes::from(body.clone());
        let mut ours = BytesMut::with_capacity(2 * len + 4096);
        let mut chunks = Vec::with_capacity(8);
        g.bench_function("carehare", |b| {
            b.iter(|| {
                ours.clear();
                chunks.clear();
                carehare_publish_chunks(&mut ours, &mut chunks, black_box(&shared_body));
                black_box((ours.len(), chunks.len()))
            })
        });
        let mut theirs = Some(Vec::with_capacity(2 * len + 4096));
        g.bench_function("amq-protocol", |b| {
            b.iter(|| {
                let mut v = theirs.take().unwrap_or_default();
                v.clear();
                let v = amq_publish(v, black_box(&body));
                let n = v.len();
                theirs = Some(v);
                black_box(n)
            })
        });
        g.finish();
    }
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
