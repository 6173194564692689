"""Writes tests/golden/optim.json: torch.optim.AdamW steps, HF LR schedules and
torch.nn.utils.clip_grad_norm_ on fixed tensors, the references for train-loop.

- AdamW: two parameter groups as the HF Trainer builds them (weights with decay,
  biases/LayerNorm without), 6 steps with given gradients and a changing learning rate
  (set per step, as the scheduler does); parameters after every step, final state.
  Three variants: `adamw` (single-tensor, foreach=False), `adamw_fused` (fused=True,
  HF Trainer's default `adamw_torch_fused`), and `adamw_tiny_grads` (fused, gradients
  of ~1e-8 so that sqrt(v_hat) is comparable to eps: eps added inside the sqrt, or
  before the bias correction, would move the parameters by a very different amount),
  and `adamw_fused_clipped` (fused, with clip_grad_norm_(max_norm=2) before every step,
  as the Trainer does: the large-gradient steps are clipped, the small ones not).
- Schedules: transformers' get_{linear,cosine,constant}_schedule_with_warmup and
  get_constant_schedule, learning rate at every step.
- Clipping: total norm returned and the clipped gradients, above and below max_norm.

Run: .venv-ref/bin/python scripts/golden_optim.py
"""
import json
from pathlib import Path

import torch
import transformers
from transformers import (
    get_constant_schedule,
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
    get_linear_schedule_with_warmup,
)

ROOT = Path(__file__).resolve().parent.parent


def flat(t):
    return [float(x) for x in t.detach().flatten().tolist()]


def adamw_case(fused=False, grad_scale=1.0, max_norm=None):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3, 4, generator=g, dtype=torch.float32)
    b = torch.randn(4, generator=g, dtype=torch.float32)
    init = {"w": flat(w), "b": flat(b)}
    w.requires_grad_(True)
    b.requires_grad_(True)
    opt = torch.optim.AdamW(
        [{"params": [w], "weight_decay": 0.01}, {"params": [b], "weight_decay": 0.0}],
        lr=1e-3, betas=(0.9, 0.999), eps=1e-8,
        foreach=False, fused=fused,
    )
    steps = []
    for step in range(6):
        lr = 1e-3 * (1.0 - step / 10)
        for group in opt.param_groups:
            group["lr"] = lr
        gw = torch.randn(3, 4, generator=g) * (0.1 if step % 2 else 3.0) * grad_scale
        gb = torch.randn(4, generator=g) * 0.5 * grad_scale
        w.grad, b.grad = gw.clone(), gb.clone()
        record = {"lr": lr, "grad_w": flat(gw), "grad_b": flat(gb)}
        if max_norm is not None:
            record["grad_norm"] = float(torch.nn.utils.clip_grad_norm_([w, b], max_norm))
        opt.step()
        steps.append({**record, "w": flat(w), "b": flat(b)})
    state_w, state_b = opt.state[w], opt.state[b]
    return {
        "fused": fused, "grad_scale": grad_scale, "max_norm": max_norm,
        "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": {"w": 0.01, "b": 0.0},
        "shape_w": [3, 4], "init": init, "steps": steps,
        "final_state": {
            "step": int(state_w["step"]),
            "exp_avg_w": flat(state_w["exp_avg"]), "exp_avg_sq_w": flat(state_w["exp_avg_sq"]),
            "exp_avg_b": flat(state_b["exp_avg"]), "exp_avg_sq_b": flat(state_b["exp_avg_sq"]),
        },
    }


def schedule(make, total=100, base=5e-5):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base)
    sched = make(opt)
    lrs = []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def clip_cases():
    g = torch.Generator().manual_seed(1)
    out = []
    for scale, max_norm in [(1.0, 1.0), (0.01, 1.0), (5.0, 0.5)]:
        grads = [torch.randn(5, 3, generator=g) * scale, torch.randn(7, generator=g) * scale]
        params = [torch.nn.Parameter(torch.zeros_like(x)) for x in grads]
        for p, x in zip(params, grads):
            p.grad = x.clone()
        total = torch.nn.utils.clip_grad_norm_(params, max_norm)
        out.append({
            "max_norm": max_norm,
            "grads": [flat(x) for x in grads],
            "total_norm": float(total),
            "clipped": [flat(p.grad) for p in params],
        })
    return out


def main():
    out = {
        "generator": "scripts/golden_optim.py",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "adamw": adamw_case(),
        "adamw_fused": adamw_case(fused=True),
        "adamw_tiny_grads": adamw_case(fused=True, grad_scale=1e-8),
        "adamw_fused_clipped": adamw_case(fused=True, max_norm=2.0),
        "schedules": {
            "base_lr": 5e-5, "warmup_steps": 10, "total_steps": 100,
            "linear": schedule(lambda o: get_linear_schedule_with_warmup(o, 10, 100)),
            "cosine": schedule(lambda o: get_cosine_schedule_with_warmup(o, 10, 100)),
            "constant_with_warmup": schedule(lambda o: get_constant_schedule_with_warmup(o, 10)),
            "constant": schedule(lambda o: get_constant_schedule(o)),
        },
        "clip_grad_norm": clip_cases(),
    }
    target = ROOT / "tests" / "golden" / "optim.json"
    target.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
