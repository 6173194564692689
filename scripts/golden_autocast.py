"""Writes tests/golden/model_bf16.json: HF BertForSequenceClassification on the real
test model under `torch.autocast("cpu", dtype=torch.bfloat16)` (what the Trainer's
`bf16=True` does), for the MRPC and SST-2 batches of scripts/golden_model.py (same
model, head and rows): logits, pooled output, hidden states at real tokens, the
loss and the classifier-weight gradient.

It also records how far two wrong bf16 recipes land from autocast, so the parity test
can show its tolerance tells them apart:
- `bf16_residual`: LayerNorm computed in fp32 but its output, hence the residual
  stream, kept in bf16 (glue-rs's --bf16 before autocast);
- `spread`: autocast itself run differently (2 threads; each row alone, unpadded;
  the embedding output moved by one fp32 ulp at random, as a different but equally
  right order of fp32 additions does), the noise any faithful bf16 implementation,
  or another CPU's bf16 kernels, may show.

Run: .venv-ref/bin/python scripts/golden_autocast.py
     .venv-ref/bin/python scripts/golden_autocast.py --check   # compare, write nothing

`--check` prints how far HF on this machine, and a bf16 residual stream on this
machine, land from the committed golden (mean |diff| of hidden states at real tokens):
the parity test's bound must sit between the two on every CPU (bf16 kernels differ
between CPUs with and without bf16 instructions).
"""
import json
import sys
from pathlib import Path

import torch
import transformers
from transformers import AutoTokenizer, BertForSequenceClassification

import golden_model as gm

ROOT = Path(__file__).resolve().parent.parent


def run(model, enc, labels):
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**enc, labels=labels)
        bert = model.bert(**enc)
    out.loss.backward()
    mask = enc["attention_mask"].bool()
    hidden = bert.last_hidden_state.float()
    return {
        "logits": out.logits.float().detach(),
        "pooled_output": bert.pooler_output.float().detach(),
        "hidden_real_tokens": torch.cat([hidden[i][mask[i]] for i in range(mask.shape[0])]).detach(),
        "loss": out.loss.detach().float().reshape(1),
        "classifier_weight_grad": model.classifier.weight.grad.detach().clone(),
    }


class Bf16ResidualLayerNorm(torch.nn.LayerNorm):
    """LayerNorm in fp32 whose output is rounded to bf16: a bf16 residual stream."""

    def forward(self, x):
        return super().forward(x.float()).to(torch.bfloat16).float()


def bf16_residual(model):
    for name, module in list(model.named_modules()):
        if isinstance(module, torch.nn.LayerNorm) and not isinstance(module, Bf16ResidualLayerNorm):
            module.__class__ = Bf16ResidualLayerNorm
    return model


def ulp_perturbed(model, enc):
    """Hidden states at real tokens with the embedding output moved by 0 or +-1 ulp."""
    g = torch.Generator().manual_seed(5)

    def nudge(_module, _inputs, output):
        sign = torch.randint(-1, 2, output.shape, generator=g).float()
        return output * (1 + sign * 2.0**-23)

    handle = model.bert.embeddings.register_forward_hook(nudge)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = model.bert(**enc).last_hidden_state.float()
    handle.remove()
    mask = enc["attention_mask"].bool()
    return torch.cat([hidden[i][mask[i]] for i in range(mask.shape[0])])


def max_diff(a, b):
    return {k: float((a[k] - b[k]).abs().max()) for k in a}


def mean_diff(a, b):
    return {k: float((a[k] - b[k]).abs().mean()) for k in a}


def main():
    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(str(gm.MODEL))

    def fresh():
        torch.manual_seed(0)
        return BertForSequenceClassification.from_pretrained(str(gm.MODEL), num_labels=2).eval()

    model = fresh()
    cases, wrong, spread, wrong_mean, spread_mean = [], {}, {}, {}, {}
    for name, (texts, labels) in {
        "mrpc_validation": gm.rows("mrpc", ["sentence1", "sentence2"]),
        "sst2_validation": gm.rows("sst2", ["sentence"]),
    }.items():
        enc = tok(*texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
        label_tensor = torch.tensor(labels)
        ref = run(model, enc, label_tensor)
        cases.append({"name": name, "shape": list(enc["input_ids"].shape),
                      "input_ids": enc["input_ids"].flatten().tolist(),
                      "token_type_ids": enc["token_type_ids"].flatten().tolist(),
                      "attention_mask": enc["attention_mask"].flatten().tolist(),
                      "labels": labels} |
                     {k: [float(x) for x in v.flatten().tolist()] for k, v in ref.items()})
        residual = run(bf16_residual(fresh()), enc, label_tensor)
        for k, v in max_diff(residual, ref).items():
            wrong[k] = max(wrong.get(k, 0.0), v)
        for k, v in mean_diff(residual, ref).items():
            wrong_mean[k] = max(wrong_mean.get(k, 0.0), v)
        torch.set_num_threads(2)
        variants = [run(model, enc, label_tensor)]
        torch.set_num_threads(1)
        # Each row alone: logits and pooled output per row (no padding at all).
        alone = [tok(*[t[i] for t in texts], truncation=True, max_length=128, return_tensors="pt")
                 for i in range(len(labels))]
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            logits = torch.cat([model(**e).logits.float() for e in alone])
            bert = [model.bert(**e) for e in alone]
        pooled = torch.cat([b.pooler_output.float() for b in bert])
        hidden = torch.cat([b.last_hidden_state[0].float() for b in bert])
        alone_mean = float((hidden - ref["hidden_real_tokens"]).abs().mean())
        ulp_mean = float((ulp_perturbed(model, enc) - ref["hidden_real_tokens"]).abs().mean())
        spread_mean["hidden_real_tokens"] = max(
            spread_mean.get("hidden_real_tokens", 0.0), alone_mean, ulp_mean)
        for d in [max_diff(variants[0], ref),
                  {"logits": float((logits - ref["logits"]).abs().max()),
                   "pooled_output": float((pooled - ref["pooled_output"]).abs().max()),
                   "hidden_real_tokens": float((hidden - ref["hidden_real_tokens"]).abs().max())}]:
            for k, v in d.items():
                spread[k] = max(spread.get(k, 0.0), v)
    out = {
        "generator": "scripts/golden_autocast.py",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "autocast": "torch.autocast('cpu', dtype=torch.bfloat16)",
        "classification_head": gm.head(model),
        "cases": cases,
        "bf16_residual_max_abs_diff": wrong,
        "autocast_spread_max_abs_diff": spread,
        "bf16_residual_mean_abs_diff": wrong_mean,
        "autocast_spread_mean_abs_diff": spread_mean,
    }
    print("bf16 residual stream vs autocast:", wrong)
    print("autocast vs itself (threads, unpadded rows):", spread)
    print("mean |diff| of hidden states: bf16 residual", wrong_mean["hidden_real_tokens"],
          "autocast spread", spread_mean["hidden_real_tokens"])
    target = ROOT / "tests" / "golden" / "model_bf16.json"
    target.write_text(json.dumps(out, separators=(",", ":")) + "\n")
    print(f"wrote {target} ({target.stat().st_size} bytes)")


def check():
    torch.set_num_threads(1)
    golden = json.loads((ROOT / "tests" / "golden" / "model_bf16.json").read_text())
    tok = AutoTokenizer.from_pretrained(str(gm.MODEL))

    def fresh():
        torch.manual_seed(0)
        return BertForSequenceClassification.from_pretrained(str(gm.MODEL), num_labels=2).eval()

    rows = {"mrpc_validation": gm.rows("mrpc", ["sentence1", "sentence2"]),
            "sst2_validation": gm.rows("sst2", ["sentence"])}
    for case in golden["cases"]:
        texts, labels = rows[case["name"]]
        enc = tok(*texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
        want = torch.tensor(case["hidden_real_tokens"])
        for label, model in [("HF autocast", fresh()), ("bf16 residual", bf16_residual(fresh()))]:
            got = run(model, enc, torch.tensor(labels))["hidden_real_tokens"].flatten()
            print(f"{case['name']}: {label} here vs golden, mean |diff| of hidden states "
                  f"{float((got - want).abs().mean()):.3e}")


if __name__ == "__main__":
    check() if "--check" in sys.argv[1:] else main()
