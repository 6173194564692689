//! Preprocessing throughput: parquet -> typed examples -> HF-identical encodings,
//! on the real sst2 train (67,349 sentences) and mrpc train (3,668 pairs) splits.
//! `scripts/bench_tokenize.py` runs the HF Python path on the same data and prints the ratio.

use criterion::{criterion_group, criterion_main, Criterion};
use glue_data::{load_split, Preprocessor, Task};
use glue_testkit::{mirror_dir, test_model_dir};

fn preprocess(c: &mut Criterion) {
    let mirror = mirror_dir();
    let pre = Preprocessor::from_file(&test_model_dir(), 128).unwrap();
    let mut group = c.benchmark_group("preprocess");
    group.sample_size(10);
    for (task, name) in [(Task::Sst2, "sst2_train"), (Task::Mrpc, "mrpc_train")] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let split = load_split(&mirror, task, "train").unwrap();
                pre.encode_split(&split).unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, preprocess);
criterion_main!(benches);
