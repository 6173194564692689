//! Forward and forward+backward of the test model (all-MiniLM-L6-v2 + a classifier)
//! on CPU at batch 16 x 64 tokens. `scripts/bench_model.py` runs HF transformers on the
//! same shapes with the same thread count and prints the ratio.

use bert_model::BertForSequenceClassification;
use criterion::{criterion_group, criterion_main, Criterion};
use glue_testkit::test_model_dir;
use tch::{Device, Kind, Tensor};

fn bench(c: &mut Criterion) {
    let threads: i32 = std::env::var("BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    tch::set_num_threads(threads);
    tch::manual_seed(0);
    let (model, _) = BertForSequenceClassification::from_pretrained(
        test_model_dir().to_str().unwrap(),
        Some(&["a", "b"]),
        Device::Cpu,
    )
    .unwrap();
    let ids = Tensor::randint_low(1000, 30000, [16, 64], (Kind::Int64, Device::Cpu));
    let types = ids.zeros_like();
    let mask = ids.ones_like();
    let labels = Tensor::randint(2, [16], (Kind::Int64, Device::Cpu));
    let mut group = c.benchmark_group("minilm_b16_s64");
    group.sample_size(20);
    group.bench_function("forward", |b| {
        b.iter(|| {
            tch::no_grad(|| {
                model
                    .forward(&ids, &types, &mask, None, false)
                    .unwrap()
                    .logits
            })
        })
    });
    group.bench_function("forward_backward", |b| {
        b.iter(|| {
            let loss = model
                .forward(&ids, &types, &mask, Some(&labels), true)
                .unwrap()
                .loss
                .unwrap();
            loss.backward();
            for (_, mut v) in model.vs.variables() {
                v.zero_grad();
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
