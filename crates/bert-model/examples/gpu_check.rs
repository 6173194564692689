//! GPU check, in two halves (driven by `cargo xtask gpu-check`):
//!
//! - `gpu_check pack OUT`: here. Writes a small copy of the test model whose word
//!   embeddings hold only the rows the golden batches use (ids remapped), so it fits
//!   the 64 MiB that travels to the GPU machine yet gives the very same outputs,
//!   plus the golden inputs and HF outputs (tests/golden/model.json, model_bf16.json)
//!   and the optimizer goldens (optim.json).
//! - `gpu_check check DIR`: on the GPU machine. Prints a markdown table:
//!   CUDA fp32 and bf16-autocast outputs, both layouts, against HF's goldens;
//!   the fused AdamW kernel on CUDA against `torch.optim.AdamW(fused=True)`;
//!   a training step run twice under deterministic mode, compared bit for bit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bert_model::{select_device, BertForSequenceClassification, DeviceChoice, Layout, Precision};
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

fn read_json(path: &Path) -> Res<Value> {
    Ok(serde_json::from_str(&std::fs::read_to_string(path)?)?)
}

fn pack(out: &Path) -> Res<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let model_dir = std::env::var_os("GLUE_TEST_MODEL")
        .map(PathBuf::from)
        .unwrap_or(root.join(".venv/test-model"));
    let golden_dir = root.join("tests/golden");
    let mut goldens = [
        read_json(&golden_dir.join("model.json"))?,
        read_json(&golden_dir.join("model_bf16.json"))?,
    ];
    // Every id the golden batches use, in a new dense numbering.
    let mut used: Vec<i64> = goldens
        .iter()
        .flat_map(|g| g["cases"].as_array().unwrap().clone())
        .flat_map(|c| ids_of(&c["input_ids"]))
        .collect();
    used.sort_unstable();
    used.dedup();
    let remap: BTreeMap<i64, i64> = used
        .iter()
        .enumerate()
        .map(|(i, &id)| (id, i as i64))
        .collect();
    for golden in &mut goldens {
        for case in golden["cases"].as_array_mut().unwrap() {
            let remapped: Vec<i64> = ids_of(&case["input_ids"])
                .iter()
                .map(|id| remap[id])
                .collect();
            case["input_ids"] = serde_json::to_value(remapped)?;
        }
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
    let mut config = read_json(&model_dir.join("config.json"))?;
    config["vocab_size"] = Value::from(used.len());
    std::fs::write(
        out.join("model/config.json"),
        serde_json::to_string_pretty(&config)?,
    )?;
    std::fs::write(out.join("golden.json"), serde_json::to_string(&goldens[0])?)?;
    std::fs::write(
        out.join("golden_bf16.json"),
        serde_json::to_string(&goldens[1])?,
    )?;
    std::fs::copy(golden_dir.join("optim.json"), out.join("optim.json"))?;
    println!(
        "packed {} (vocab {} rows) into {}",
        model_dir.display(),
        used.len(),
        out.display()
    );
    Ok(())
}

fn host(t: &Tensor) -> Tensor {
    t.to(Device::Cpu).to_kind(Kind::Float)
}

fn max_abs(ours: &Tensor, theirs: &[f32]) -> f64 {
    let theirs = Tensor::from_slice(theirs).view(ours.size().as_slice());
    (host(ours) - theirs).abs().max().double_value(&[])
}

/// Rows of `[batch, seq, h]` at real tokens, flattened.
fn real_tokens(hidden: &Tensor, mask: &Tensor) -> Tensor {
    let h = hidden.size()[2];
    let index = host(mask).flatten(0, -1).nonzero().squeeze_dim(1);
    host(hidden).reshape([-1, h]).index_select(0, &index)
}

fn load_model(dir: &Path, golden: &Value, device: Device) -> Res<BertForSequenceClassification> {
    let (model, _) = BertForSequenceClassification::from_pretrained(
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
    Ok(model)
}

fn inputs(case: &Value, device: Device) -> (Tensor, Tensor, Tensor) {
    let shape = ids_of(&case["shape"]);
    let t = |k: &str| {
        Tensor::from_slice(&ids_of(&case[k]))
            .view([shape[0], shape[1]])
            .to(device)
    };
    (t("input_ids"), t("token_type_ids"), t("attention_mask"))
}

fn status(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "FAIL"
    }
}

/// fp32: relative to each tensor's scale, 1e-4 (CPU goldens; TF32 is off by default).
/// bf16: CUDA's bf16 kernels are not the CPU's, so only sanity bounds apply; the mean
/// hidden-state difference is printed next to the CPU figure (1.6e-3 bound there).
fn parity(dir: &Path, device: Device) -> Res<Vec<String>> {
    let mut rows = Vec::new();
    for (precision, file) in [
        (Precision::Fp32, "golden.json"),
        (Precision::Bf16, "golden_bf16.json"),
    ] {
        let golden = read_json(&dir.join(file))?;
        let mut model = load_model(dir, &golden, device)?;
        model.set_precision(precision)?;
        for layout in [Layout::Padded, Layout::PaddingFree] {
            model.set_layout(layout);
            for case in golden["cases"].as_array().unwrap().iter().take(2) {
                let (ids, types, mask) = inputs(case, device);
                let out = tch::no_grad(|| model.forward(&ids, &types, &mask, None, false))?;
                let hidden = real_tokens(&out.last_hidden_state, &mask);
                let theirs_logits = f32s(&case["logits"]);
                let scale = theirs_logits
                    .iter()
                    .map(|x| x.abs() as f64)
                    .fold(0.0, f64::max);
                let d_logits = max_abs(&out.logits, &theirs_logits);
                let d_pooled = max_abs(&out.pooled_output, &f32s(&case["pooled_output"]));
                let (hidden_text, ok) = if precision == Precision::Fp32 {
                    let shape = ids_of(&case["shape"]);
                    let all = Tensor::from_slice(&f32s(&case["last_hidden_state"]))
                        .view([shape[0], shape[1], -1]);
                    let theirs = real_tokens(&all, &host(&mask));
                    let d = (&hidden - &theirs).abs().max().double_value(&[])
                        / theirs.abs().max().double_value(&[]);
                    (
                        format!("hidden {d:.2e} (rel)"),
                        d_logits / scale <= 1e-4 && d <= 1e-4 && d_pooled <= 1e-4,
                    )
                } else {
                    let theirs = Tensor::from_slice(&f32s(&case["hidden_real_tokens"]))
                        .view(hidden.size().as_slice());
                    let mean = (&hidden - theirs)
                        .abs()
                        .mean(Kind::Double)
                        .double_value(&[]);
                    (
                        format!("hidden mean {mean:.2e}"),
                        d_logits <= 2e-2 && d_pooled <= 2e-2 && mean <= 1e-2,
                    )
                };
                rows.push(format!(
                    "| parity {precision:?} {layout:?} {} | logits {d_logits:.2e}, pooled {d_pooled:.2e}, {hidden_text} | {} |",
                    case["name"].as_str().unwrap(),
                    status(ok)
                ));
            }
        }
    }
    Ok(rows)
}

/// The fused AdamW kernel on CUDA replays torch's fused goldens (two decay groups).
fn fused_adamw(dir: &Path, device: Device) -> Res<Vec<String>> {
    let golden = read_json(&dir.join("optim.json"))?;
    let mut rows = Vec::new();
    for name in ["adamw_fused", "adamw_tiny_grads"] {
        let case = &golden[name];
        let t = |v: &Value, shape: &[i64]| Tensor::from_slice(&f32s(v)).view(shape).to(device);
        let w = t(&case["init"]["w"], &[3, 4]);
        let b = t(&case["init"]["b"], &[4]);
        let state: Vec<Tensor> = [&w, &w, &b, &b].iter().map(|p| p.zeros_like()).collect();
        let mut step = Tensor::zeros([], (Kind::Float, device));
        let mut worst: f64 = 0.0;
        for (i, s) in case["steps"].as_array().unwrap().iter().enumerate() {
            let _ = step.fill_((i + 1) as f64);
            for (p, g, m, v, decay) in [
                (&w, t(&s["grad_w"], &[3, 4]), &state[0], &state[1], 0.01),
                (&b, t(&s["grad_b"], &[4]), &state[2], &state[3], 0.0),
            ] {
                torch_shim::fused_adamw(
                    &[p],
                    &[&g],
                    &[m],
                    &[v],
                    &[&step],
                    None,
                    torch_shim::AdamWHyper {
                        lr: s["lr"].as_f64().unwrap(),
                        beta1: 0.9,
                        beta2: 0.999,
                        weight_decay: decay,
                        eps: 1e-8,
                    },
                )?;
            }
            for (p, key) in [(&w, "w"), (&b, "b")] {
                let theirs = Tensor::from_slice(&f32s(&s[key]));
                let rel = ((host(p).flatten(0, -1) - &theirs).abs() / theirs.abs().clamp_min(1e-6))
                    .max()
                    .double_value(&[]);
                worst = worst.max(rel);
            }
        }
        rows.push(format!(
            "| fused AdamW on {device:?}, {name} | max relative error {worst:.2e} (<= 1e-5) | {} |",
            status(worst <= 1e-5)
        ));
    }
    Ok(rows)
}

/// One training step (dropout on, padding-free) run twice from the same seed under
/// `torch.use_deterministic_algorithms(True)`: no op may refuse, gradients equal.
fn deterministic_step(dir: &Path, device: Device) -> Res<Vec<String>> {
    let golden = read_json(&dir.join("golden.json"))?;
    let model = load_model(dir, &golden, device)?;
    torch_shim::set_deterministic(true)?;
    let case = &golden["cases"][0];
    let (ids, types, mask) = inputs(case, device);
    let labels = Tensor::from_slice(&ids_of(&case["labels"])).to(device);
    let mut grads = Vec::new();
    for _ in 0..2 {
        for (_, mut v) in model.vs.variables() {
            v.zero_grad();
        }
        tch::manual_seed(7);
        let loss = model
            .forward(&ids, &types, &mask, Some(&labels), true)?
            .loss
            .unwrap();
        loss.backward();
        let vars: BTreeMap<String, Tensor> = model.vs.variables().into_iter().collect();
        grads.push(vars.values().map(|v| host(&v.grad())).collect::<Vec<_>>());
    }
    torch_shim::set_deterministic(false)?;
    let equal = grads[0].iter().zip(&grads[1]).all(|(a, b)| a.equal(b));
    Ok(vec![format!(
        "| deterministic training step twice on {device:?} | gradients {} | {} |",
        if equal { "bit-identical" } else { "differ" },
        status(equal)
    )])
}

fn check(dir: &Path) -> Res<()> {
    let (device, notice) = select_device(DeviceChoice::Auto)?;
    println!("{notice}; libtorch {}", torch_shim::torch_version());
    if device == Device::Cpu {
        println!("(no CUDA device: the numbers below are CPU numbers)");
    }
    println!("| check | result | status |\n|---|---|---|");
    // A failing part is reported as a row; the others still run.
    std::panic::set_hook(Box::new(|_| {}));
    for part in [parity, fused_adamw, deterministic_step] {
        match std::panic::catch_unwind(|| part(dir, device)) {
            Ok(Ok(rows)) => rows.iter().for_each(|r| println!("{r}")),
            Ok(Err(e)) => println!("| (check failed to run) | {e} | FAIL |"),
            Err(panic) => {
                let text = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                let first = text.lines().next().unwrap_or("panic").chars().take(300);
                println!(
                    "| (check panicked) | {} | FAIL |",
                    first.collect::<String>()
                );
            }
        }
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
