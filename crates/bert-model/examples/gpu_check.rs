//! GPU check, in two halves (driven by `cargo xtask gpu-check`):
//!
//! - `gpu_check pack OUT`: here. Writes a small copy of the test model whose word
//!   embeddings hold only the rows the golden batches use (ids remapped), so it fits
//!   the 64 MiB that travels to the GPU machine yet gives the very same fp32 outputs,
//!   plus the golden inputs and HF outputs (tests/golden/model.json).
//! - `gpu_check check DIR`: on the GPU machine. CUDA fp32 and bf16 logits and pooled
//!   outputs against the HF golden values (fp32 <= 1e-3, bf16 <= 2e-2), then
//!   forward+backward throughput of a bert-base-sized random model at batch 32 x 128.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bert_model::{
    select_device, BertConfig, BertForSequenceClassification, DeviceChoice, Precision,
};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn ids_of(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

fn f32s(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn pack(out: &Path) -> Res<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let model_dir = std::env::var_os("GLUE_TEST_MODEL")
        .map(PathBuf::from)
        .unwrap_or(root.join(".venv/test-model"));
    let mut golden: Value = serde_json::from_str(&std::fs::read_to_string(
        root.join("tests/golden/model.json"),
    )?)?;
    // Every id the golden batches use, in a new dense numbering.
    let mut used: Vec<i64> = golden["cases"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| ids_of(&c["input_ids"]))
        .collect();
    used.sort_unstable();
    used.dedup();
    let remap: BTreeMap<i64, i64> = used
        .iter()
        .enumerate()
        .map(|(i, &id)| (id, i as i64))
        .collect();
    for case in golden["cases"].as_array_mut().unwrap() {
        let remapped: Vec<i64> = ids_of(&case["input_ids"])
            .iter()
            .map(|id| remap[id])
            .collect();
        case["input_ids"] = serde_json::to_value(remapped)?;
    }
    std::fs::create_dir_all(out.join("model"))?;
    let weights = Tensor::read_safetensors(model_dir.join("model.safetensors"))?;
    let index = Tensor::from_slice(&used);
    let small: Vec<(String, Tensor)> = weights
        .into_iter()
        .map(|(k, t)| {
            if k.ends_with("word_embeddings.weight") {
                (k, t.index_select(0, &index))
            } else {
                (k, t)
            }
        })
        .collect();
    Tensor::write_safetensors(&small, out.join("model/model.safetensors"))?;
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(model_dir.join("config.json"))?)?;
    config["vocab_size"] = Value::from(used.len());
    std::fs::write(
        out.join("model/config.json"),
        serde_json::to_string_pretty(&config)?,
    )?;
    std::fs::write(out.join("golden.json"), serde_json::to_string(&golden)?)?;
    println!(
        "packed {} (vocab {} rows) into {}",
        model_dir.display(),
        used.len(),
        out.display()
    );
    Ok(())
}

fn max_abs(ours: &Tensor, theirs: &[f32]) -> f64 {
    let ours: Vec<f32> =
        Vec::try_from(ours.to(Device::Cpu).to_kind(Kind::Float).flatten(0, -1)).unwrap();
    ours.iter()
        .zip(theirs)
        .map(|(a, b)| (a - b).abs() as f64)
        .fold(0.0, f64::max)
}

fn parity(dir: &Path, device: Device) -> Res<Vec<String>> {
    let golden: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json"))?)?;
    let (mut model, _) = BertForSequenceClassification::from_pretrained(
        dir.join("model").to_str().unwrap(),
        Some(&["not_equivalent", "equivalent"]),
        device,
    )?;
    let head = &golden["classification_head"];
    let mut vars = model.vs.variables();
    tch::no_grad(|| {
        vars.get_mut("classifier.weight").unwrap().copy_(
            &Tensor::from_slice(&f32s(&head["classifier.weight"]))
                .view([2, -1])
                .to(device),
        );
        vars.get_mut("classifier.bias")
            .unwrap()
            .copy_(&Tensor::from_slice(&f32s(&head["classifier.bias"])).to(device));
    });
    let mut rows = Vec::new();
    for (precision, tolerance) in [(Precision::Fp32, 1e-3), (Precision::Bf16, 2e-2)] {
        model.set_precision(precision);
        for case in golden["cases"].as_array().unwrap().iter().take(2) {
            let shape = ids_of(&case["shape"]);
            let t = |k: &str| {
                Tensor::from_slice(&ids_of(&case[k]))
                    .view([shape[0], shape[1]])
                    .to(device)
            };
            let out = tch::no_grad(|| {
                model.forward(
                    &t("input_ids"),
                    &t("token_type_ids"),
                    &t("attention_mask"),
                    None,
                    false,
                )
            });
            let d_logits = max_abs(&out.logits, &f32s(&case["logits"]));
            let d_pooled = max_abs(&out.pooled_output, &f32s(&case["pooled_output"]));
            let ok = d_logits <= tolerance && d_pooled <= tolerance;
            rows.push(format!(
                "| parity {:?} {} | logits {:.2e}, pooled {:.2e} (<= {:.0e}) | {} |",
                precision,
                case["name"].as_str().unwrap(),
                d_logits,
                d_pooled,
                tolerance,
                if ok { "ok" } else { "FAIL" }
            ));
        }
    }
    Ok(rows)
}

fn throughput(device: Device, precision: Precision) -> f64 {
    tch::manual_seed(0);
    let mut model = BertForSequenceClassification::new(BertConfig::default(), device);
    model.set_precision(precision);
    let ids = Tensor::randint_low(1000, 30000, [32, 128], (Kind::Int64, device));
    let types = ids.zeros_like();
    let mask = ids.ones_like();
    let labels = Tensor::randint(2, [32], (Kind::Int64, device));
    let step = || {
        let loss = model
            .forward(&ids, &types, &mask, Some(&labels), true)
            .loss
            .unwrap();
        loss.backward();
        for (_, mut v) in model.vs.variables() {
            v.zero_grad();
        }
    };
    for _ in 0..3 {
        step();
    }
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
    let n = 20;
    let start = Instant::now();
    for _ in 0..n {
        step();
    }
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
    (n * 32) as f64 / start.elapsed().as_secs_f64()
}

fn check(dir: &Path) -> Res<()> {
    let (device, notice) = select_device(DeviceChoice::Auto)?;
    println!("{notice}");
    if device == Device::Cpu {
        println!("(no CUDA device: the numbers below are CPU numbers)");
    }
    println!("| check | result | status |\n|---|---|---|");
    for row in parity(dir, device)? {
        println!("{row}");
    }
    if std::env::var_os("GPU_CHECK_SKIP_THROUGHPUT").is_some() {
        return Ok(());
    }
    for precision in [Precision::Fp32, Precision::Bf16] {
        let rate = throughput(device, precision);
        println!("| glue-rs bert-base fwd+bwd {precision:?}, batch 32 x 128 | {rate:.1} sequences/s | - |");
    }
    Ok(())
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    match (args.get(1).map(String::as_str), args.get(2)) {
        (Some("pack"), Some(out)) => pack(Path::new(out)),
        (Some("check"), Some(dir)) => check(Path::new(dir)),
        _ => Err("usage: gpu_check pack OUT_DIR | gpu_check check DIR".into()),
    }
}
