//! AdamW, LR schedules and gradient clipping against torch / HF transformers
//! (tests/golden/optim.json, written by scripts/golden_optim.py).

use glue_testkit::{golden, json_f64s};
use serde_json::Value;
use tch::{Kind, Tensor};
use train_loop::{
    clip_grad_norm, AdamW, AdamWConfig, LrSchedule, OptimizerKind, Param, SchedulerType,
};

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

fn two_group_adamw(w: &Tensor, b: &Tensor, kind: OptimizerKind) -> AdamW {
    AdamW::new(
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
        AdamWConfig {
            kind,
            ..AdamWConfig::default()
        },
    )
}

/// Replays a golden case's 6 steps; checks parameters after every step (relative to
/// their value, and the total displacement from the start relative to torch's) and
/// the final state.
fn replay_adamw_case(name: &str, kind: OptimizerKind) {
    let g = golden("optim.json");
    let case = &g[name];
    let w = tensor(&case["init"]["w"], &[3, 4]).set_requires_grad(true);
    let b = tensor(&case["init"]["b"], &[4]).set_requires_grad(true);
    let (w0, b0) = (w.detach().copy(), b.detach().copy());
    let mut opt = two_group_adamw(&w, &b, kind);
    for (i, step) in case["steps"].as_array().unwrap().iter().enumerate() {
        // Gradients as torch saw them: set through a backward of <param, grad>.
        opt.zero_grad().unwrap();
        let loss = (&w * tensor(&step["grad_w"], &[3, 4])).sum(Kind::Float)
            + (&b * tensor(&step["grad_b"], &[4])).sum(Kind::Float);
        loss.backward();
        if let Some(max_norm) = case["max_norm"].as_f64() {
            // The fused kind leaves the scaling to the step's kernel; the other scales
            // the gradients in place, as torch does.
            let norm = opt.clip_grad_norm(max_norm).unwrap().double_value(&[]);
            let theirs = step["grad_norm"].as_f64().unwrap();
            assert!(
                (norm - theirs).abs() <= 1e-6 * theirs,
                "{name} {kind:?} step {i}: norm {norm} vs {theirs}"
            );
        }
        opt.step(step["lr"].as_f64().unwrap()).unwrap();
        let (dw, db) = (max_rel_diff(&w, &step["w"]), max_rel_diff(&b, &step["b"]));
        assert!(
            dw <= 1e-6 && db <= 1e-6,
            "{name} {kind:?} step {i}: w differs by {dw:e}, b by {db:e} (relative)"
        );
    }
    // How far the parameters moved, against how far torch moved them: sensitive to
    // where eps enters the update even when the moves are tiny next to the values.
    let last = case["steps"].as_array().unwrap().last().unwrap();
    for (ours, start, theirs, shape) in [
        (&w, &w0, &last["w"], &[3i64, 4][..]),
        (&b, &b0, &last["b"], &[4][..]),
    ] {
        let moved = ours.detach() - start;
        let torch_moved = tensor(theirs, shape) - start;
        let err = (&moved - &torch_moved).abs().max().double_value(&[])
            / torch_moved.abs().max().double_value(&[]);
        assert!(
            err <= 1e-3,
            "{name} {kind:?}: displacement differs by {err:e} (relative)"
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
        let d = max_rel_diff(&saved[ours], &state[theirs]);
        assert!(
            d <= 1e-5,
            "{name} {kind:?} {ours} differs by {d:e} (relative)"
        );
    }
}

#[test]
fn single_tensor_adamw_matches_torch_step_for_step_with_decay_groups() {
    replay_adamw_case("adamw", OptimizerKind::AdamwTorch);
}

#[test]
fn fused_adamw_matches_torch_fused_step_for_step_with_decay_groups() {
    replay_adamw_case("adamw_fused", OptimizerKind::AdamwTorchFused);
}

#[test]
fn both_adamw_kinds_put_eps_where_torch_does() {
    // Gradients ~1e-8: sqrt(v_hat) ~ eps, so the update depends on eps's placement.
    replay_adamw_case("adamw_tiny_grads", OptimizerKind::AdamwTorchFused);
    replay_adamw_case("adamw_tiny_grads", OptimizerKind::AdamwTorch);
}

#[test]
fn clipping_then_adamw_matches_torch_for_both_kinds() {
    replay_adamw_case("adamw_fused_clipped", OptimizerKind::AdamwTorchFused);
    replay_adamw_case("adamw_fused_clipped", OptimizerKind::AdamwTorch);
}

#[test]
fn optimizer_state_round_trips() {
    for kind in [OptimizerKind::AdamwTorchFused, OptimizerKind::AdamwTorch] {
        let cpu = (Kind::Float, tch::Device::Cpu);
        let (w, b) = (
            Tensor::ones([2, 2], cpu).set_requires_grad(true),
            Tensor::ones([2], cpu).set_requires_grad(true),
        );
        let mut a = two_group_adamw(&w, &b, kind);
        for lr in [1e-2, 5e-3] {
            a.zero_grad().unwrap();
            ((&w * 3.0).sum(Kind::Float) + (&b * -2.0).sum(Kind::Float)).backward();
            a.step(lr).unwrap();
        }
        let state = a.state();
        let (w2, b2) = (
            w.detach().copy().set_requires_grad(true),
            b.detach().copy().set_requires_grad(true),
        );
        let mut restored = two_group_adamw(&w2, &b2, kind);
        restored
            .load_state(state.iter().map(|(k, t)| (k.clone(), t.copy())).collect())
            .unwrap();
        assert_eq!(restored.step, 2);
        let restored_state: std::collections::BTreeMap<String, Tensor> =
            restored.state().into_iter().collect();
        for (key, saved) in &state {
            assert!(
                restored_state[key].equal(saved),
                "{kind:?}: `{key}` not restored exactly"
            );
        }
        // And the next update is the same from both.
        for (opt, w, b) in [(&mut a, &w, &b), (&mut restored, &w2, &b2)] {
            opt.zero_grad().unwrap();
            ((w * 3.0).sum(Kind::Float) + (b * -2.0).sum(Kind::Float)).backward();
            opt.step(1e-3).unwrap();
        }
        assert!(
            w.equal(&w2) && b.equal(&b2),
            "{kind:?}: resumed update differs"
        );
        let err = restored
            .load_state(vec![("step".into(), Tensor::from_slice(&[1i64]))])
            .unwrap_err();
        assert!(
            err.contains("exp_avg.b") || err.contains("exp_avg.w"),
            "{err}"
        );
    }
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
        let loss = || {
            params
                .iter()
                .zip(case["grads"].as_array().unwrap())
                .zip(shapes)
                .map(|((p, gr), s)| (p * tensor(gr, s)).sum(Kind::Float))
                .fold(
                    Tensor::zeros([], (Kind::Float, tch::Device::Cpu)),
                    |a, b| a + b,
                )
        };
        loss().backward();
        let refs: Vec<&Tensor> = params.iter().collect();
        let total = clip_grad_norm(&refs, case["max_norm"].as_f64().unwrap())
            .unwrap()
            .double_value(&[]);
        let theirs = case["total_norm"].as_f64().unwrap();
        assert!(
            (total - theirs).abs() / theirs <= 1e-6,
            "case {i}: norm {total} vs {theirs}"
        );
        for (p, clipped) in params.iter().zip(case["clipped"].as_array().unwrap()) {
            assert!(max_rel_diff(&p.grad(), clipped) <= 1e-6, "case {i}");
        }
        // The deferred form: the same norm, and a divisor that gives the same clipped
        // gradients (from the unclipped ones: re-run the backward).
        for p in &params {
            let _ = p.grad().zero_();
        }
        loss().backward();
        let grads: Vec<Tensor> = params.iter().map(Tensor::grad).collect();
        let refs: Vec<&Tensor> = grads.iter().collect();
        let (norm, divisor) =
            torch_shim::clip_grad_norm_deferred(&refs, case["max_norm"].as_f64().unwrap())
                .unwrap()
                .expect("float32 gradients");
        let norm = norm.double_value(&[]);
        assert!(
            (norm - theirs).abs() / theirs <= 1e-6,
            "case {i}: deferred norm {norm}"
        );
        for (g, clipped) in grads.iter().zip(case["clipped"].as_array().unwrap()) {
            assert!(
                max_rel_diff(&(g / &divisor), clipped) <= 1e-6,
                "case {i}: deferred"
            );
        }
    }
}
