//! Forward and forward+backward of the test model (all-MiniLM-L6-v2 + a classifier)
//! on CPU at batch 16 x 64 tokens. `scripts/bench_model.py` runs HF transformers on the
//! same shapes with the same thread count and prints the ratio. A second group times
//! forward+backward with the last layer over every token and over the first only.

use bert_model::{BertForSequenceClassification, LastLayer};
use criterion::{criterion_group, criterion_main, Criterion};
use glue_testkit::test_model_dir;
use tch::{Device, Kind, Tensor};

/// One training forward and backward; gradients zeroed after.
fn forward_backward(
    model: &BertForSequenceClassification,
    ids: &Tensor,
    types: &Tensor,
    mask: &Tensor,
    labels: &Tensor,
) {
    let loss = model
        .forward(ids, types, mask, Some(labels), true)
        .unwrap()
        .loss
        .unwrap();
    loss.backward();
    for (_, mut v) in model.vs.variables() {
        v.zero_grad();
    }
}

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
        b.iter(|| forward_backward(&model, &ids, &types, &mask, &labels))
    });
    group.finish();

    // The last layer over every token vs the first only, on an MRPC-shaped batch of 8
    // (real lengths 39-72, padded to 72), padding-free layout.
    let lengths = [48i64, 61, 39, 72, 55, 44, 66, 52];
    let mask = Tensor::stack(
        &lengths
            .iter()
            .map(|&l| {
                Tensor::arange(72, (Kind::Int64, Device::Cpu))
                    .lt(l)
                    .to_kind(Kind::Int64)
            })
            .collect::<Vec<_>>(),
        0,
    );
    let ids = Tensor::randint_low(1000, 30000, [8, 72], (Kind::Int64, Device::Cpu)) * &mask;
    let types = ids.zeros_like();
    let labels = Tensor::randint(2, [8], (Kind::Int64, Device::Cpu));
    let mut model = model;
    let mut group = c.benchmark_group("minilm_b8_mrpc_lengths");
    group.sample_size(20);
    for last_layer in [LastLayer::AllTokens, LastLayer::FirstToken] {
        model.set_last_layer(last_layer);
        group.bench_function(format!("forward_backward_{last_layer:?}"), |b| {
            b.iter(|| forward_backward(&model, &ids, &types, &mask, &labels))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
