//! AdamW, LR schedules and gradient clipping against torch / HF transformers
//! (tests/golden/optim.json, written by scripts/golden_optim.py).

use glue_testkit::{golden, json_f64s};
use serde_json::Value;
use tch::{Kind, Tensor};
use train_loop::{clip_grad_norm, AdamW, AdamWConfig, LrSchedule, Param, SchedulerType};

fn tensor(v: &Value, shape: &[i64]) -> Tensor {
    let data: Vec<f32> = json_f64s(v).into_iter().map(|x| x as f32).collect();
    Tensor::from_slice(&data).view(shape)
}

fn max_rel_diff(ours: &Tensor, theirs: &Value) -> f64 {
    let ours: Vec<f32> = Vec::try_from(ours.to_kind(Kind::Float).flatten(0, -1)).unwrap();
    let theirs = json_f64s(theirs);
    assert_eq!(ours.len(), theirs.len());
    ours.iter()
        .zip(&theirs)
        .map(|(a, b)| (*a as f64 - b).abs() / b.abs().max(1e-6))
        .fold(0.0, f64::max)
}

#[test]
fn adamw_matches_torch_step_for_step_with_decay_groups() {
    let g = golden("optim.json");
    let case = &g["adamw"];
    let w = tensor(&case["init"]["w"], &[3, 4]).set_requires_grad(true);
    let b = tensor(&case["init"]["b"], &[4]).set_requires_grad(true);
    let mut opt = AdamW::new(
        vec![
            Param {
                name: "w".into(),
                tensor: w.shallow_clone(),
                weight_decay: 0.01,
            },
            Param {
                name: "b".into(),
                tensor: b.shallow_clone(),
                weight_decay: 0.0,
            },
        ],
        AdamWConfig::default(),
    );
    for (i, step) in case["steps"].as_array().unwrap().iter().enumerate() {
        // Gradients as torch saw them: set through a backward of <param, grad>.
        opt.zero_grad();
        let loss = (&w * tensor(&step["grad_w"], &[3, 4])).sum(Kind::Float)
            + (&b * tensor(&step["grad_b"], &[4])).sum(Kind::Float);
        loss.backward();
        opt.step(step["lr"].as_f64().unwrap());
        let (dw, db) = (max_rel_diff(&w, &step["w"]), max_rel_diff(&b, &step["b"]));
        assert!(
            dw <= 1e-6 && db <= 1e-6,
            "step {i}: w differs by {dw:e}, b by {db:e} (relative)"
        );
    }
    let state = &case["final_state"];
    assert_eq!(opt.step, state["step"].as_i64().unwrap());
    let saved: std::collections::BTreeMap<String, Tensor> = opt.state().into_iter().collect();
    for (ours, theirs) in [
        ("exp_avg.w", "exp_avg_w"),
        ("exp_avg_sq.w", "exp_avg_sq_w"),
        ("exp_avg.b", "exp_avg_b"),
        ("exp_avg_sq.b", "exp_avg_sq_b"),
    ] {
        assert!(max_rel_diff(&saved[ours], &state[theirs]) <= 1e-6, "{ours}");
    }
}

#[test]
fn optimizer_state_round_trips() {
    let w = Tensor::ones([2, 2], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
    let mut a = AdamW::new(
        vec![Param {
            name: "w".into(),
            tensor: w.shallow_clone(),
            weight_decay: 0.1,
        }],
        AdamWConfig::default(),
    );
    (&w * 3.0).sum(Kind::Float).backward();
    a.step(1e-2);
    let state = a.state();
    let w2 = Tensor::ones([2, 2], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
    let mut b = AdamW::new(
        vec![Param {
            name: "w".into(),
            tensor: w2,
            weight_decay: 0.1,
        }],
        AdamWConfig::default(),
    );
    b.load_state(state.iter().map(|(k, t)| (k.clone(), t.copy())).collect())
        .unwrap();
    assert_eq!(b.step, 1);
    let err = b
        .load_state(vec![("step".into(), Tensor::from_slice(&[1i64]))])
        .unwrap_err();
    assert!(err.contains("exp_avg.w"), "{err}");
}

#[test]
fn schedules_match_transformers() {
    let g = golden("optim.json");
    let s = &g["schedules"];
    let base = s["base_lr"].as_f64().unwrap();
    let (warmup, total) = (
        s["warmup_steps"].as_u64().unwrap(),
        s["total_steps"].as_u64().unwrap(),
    );
    for (name, kind) in [
        ("linear", SchedulerType::Linear),
        ("cosine", SchedulerType::Cosine),
        ("constant_with_warmup", SchedulerType::ConstantWithWarmup),
        ("constant", SchedulerType::Constant),
    ] {
        let w = if kind == SchedulerType::Constant {
            0
        } else {
            warmup
        };
        let schedule = LrSchedule::new(kind, w, 0.0, total);
        for (step, theirs) in json_f64s(&s[name]).into_iter().enumerate() {
            let ours = schedule.lr(base, step as u64);
            assert!(
                (ours - theirs).abs() <= 1e-12 * base.max(1.0),
                "{name} step {step}: {ours} vs {theirs}"
            );
        }
    }
    // warmup_ratio: ceil(total * ratio), as TrainingArguments.get_warmup_steps.
    assert_eq!(
        LrSchedule::new(SchedulerType::Linear, 0, 0.06, 1377).warmup_steps,
        83
    );
}

#[test]
fn clipping_matches_torch_clip_grad_norm() {
    let g = golden("optim.json");
    for (i, case) in g["clip_grad_norm"].as_array().unwrap().iter().enumerate() {
        let shapes: [&[i64]; 2] = [&[5, 3], &[7]];
        let params: Vec<Tensor> = shapes
            .iter()
            .map(|s| Tensor::zeros(*s, (Kind::Float, tch::Device::Cpu)).set_requires_grad(true))
            .collect();
        let loss = params
            .iter()
            .zip(case["grads"].as_array().unwrap())
            .zip(shapes)
            .map(|((p, gr), s)| (p * tensor(gr, s)).sum(Kind::Float))
            .fold(
                Tensor::zeros([], (Kind::Float, tch::Device::Cpu)),
                |a, b| a + b,
            );
        loss.backward();
        let refs: Vec<&Tensor> = params.iter().collect();
        let total = clip_grad_norm(&refs, case["max_norm"].as_f64().unwrap());
        let theirs = case["total_norm"].as_f64().unwrap();
        assert!(
            (total - theirs).abs() / theirs <= 1e-6,
            "case {i}: norm {total} vs {theirs}"
        );
        for (p, clipped) in params.iter().zip(case["clipped"].as_array().unwrap()) {
            assert!(max_rel_diff(&p.grad(), clipped) <= 1e-6, "case {i}");
        }
    }
}
