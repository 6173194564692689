"""How far HF transformers disagrees with itself: the fp32 kernel noise that bounds
what a parity test against tests/golden/model.json may demand (written to
tests/golden/parity_spread.json, read by crates/bert-model/tests/parity.rs).

Same model, head and rows as scripts/golden_model.py; each output is recomputed
under kernel choices that are all equally "right", and compared with the reference
run (SDPA attention, 1 thread, the padded batch of 3):

- threads: 2 and 4 intra-op threads (other GEMM blocking and reduction splits);
- eager: `attn_implementation="eager"` (matmul + softmax instead of SDPA);
- alone: each row run by itself, without padding (other GEMM shapes);
- pad128: the batch padded to 128 tokens;
- golden_file: the committed tests/golden/model.json, i.e. HF on the machine that
  wrote it against HF here: the spread across CPU kinds (other SIMD code paths in
  MKL/oneDNN), by far the largest.

Hidden states are compared at real tokens only (padding positions carry no meaning).
For each output: max |difference| and max |value| of the reference, over all variants.

Run: .venv-ref/bin/python scripts/parity_spread.py
"""
import json
from pathlib import Path

import torch
import transformers
from transformers import AutoTokenizer, BertForSequenceClassification

import golden_model as gm

ROOT = Path(__file__).resolve().parent.parent


def outputs(model, enc):
    with torch.no_grad():
        out = model(**enc, output_hidden_states=True)
        bert = model.bert(**enc)
    mask = enc["attention_mask"].bool()
    return {
        "hidden": [bert.last_hidden_state[i][mask[i]] for i in range(mask.shape[0])],
        "pooled": bert.pooler_output,
        "logits": out.logits,
    }


def run(model, tok, texts, variant):
    kw = dict(truncation=True, max_length=128, return_tensors="pt")
    if variant == "alone":
        per_row = [tuple(t[i] for t in texts) for i in range(len(texts[0]))]
        outs = [outputs(model, tok(*row, **kw)) for row in per_row]
        return {
            "hidden": [o["hidden"][0] for o in outs],
            "pooled": torch.cat([o["pooled"] for o in outs]),
            "logits": torch.cat([o["logits"] for o in outs]),
        }
    padding = "max_length" if variant == "pad128" else True
    return outputs(model, tok(*texts, padding=padding, **kw))


def diff(a, b):
    if isinstance(a, list):
        return max(float((x - y).abs().max()) for x, y in zip(a, b))
    return float((a - b).abs().max())


def scale(a):
    if isinstance(a, list):
        return max(float(x.abs().max()) for x in a)
    return float(a.abs().max())


def from_golden(case):
    """The committed golden's values for a case, shaped like `outputs`."""
    b, s = case["shape"]
    mask = torch.tensor(case["attention_mask"]).view(b, s).bool()
    hidden = torch.tensor(case["last_hidden_state"]).view(b, s, -1)
    return {
        "hidden": [hidden[i][mask[i]] for i in range(b)],
        "pooled": torch.tensor(case["pooled_output"]).view(b, -1),
        "logits": torch.tensor(case["logits"]).view(b, -1),
    }


def cpu_name():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def main():
    golden = json.loads((ROOT / "tests" / "golden" / "model.json").read_text())
    tok = AutoTokenizer.from_pretrained(str(gm.MODEL))
    models = {}
    for attn in ["sdpa", "eager"]:
        torch.manual_seed(0)
        models[attn] = BertForSequenceClassification.from_pretrained(
            str(gm.MODEL), num_labels=2, attn_implementation=attn).eval()
    inputs = {
        "mrpc": gm.rows("mrpc", ["sentence1", "sentence2"])[0],
        "sst2": gm.rows("sst2", ["sentence"])[0],
    }
    spread = {}
    for (name, texts), case in zip(inputs.items(), golden["cases"]):
        torch.set_num_threads(1)
        ref = run(models["sdpa"], tok, texts, "padded")
        variants = {}
        for threads in [2, 4]:
            torch.set_num_threads(threads)
            variants[f"threads{threads}"] = run(models["sdpa"], tok, texts, "padded")
        torch.set_num_threads(1)
        variants["eager"] = run(models["eager"], tok, texts, "padded")
        variants["alone"] = run(models["sdpa"], tok, texts, "alone")
        variants["pad128"] = run(models["sdpa"], tok, texts, "pad128")
        variants["golden_file"] = from_golden(case)
        for key in ["hidden", "pooled", "logits"]:
            per_variant = {v: diff(ref[key], out[key]) for v, out in variants.items()}
            entry = spread.setdefault(key, {"max_abs_diff": 0.0, "scale": 0.0, "by_variant": {}})
            entry["max_abs_diff"] = max(entry["max_abs_diff"], max(per_variant.values()))
            entry["scale"] = max(entry["scale"], scale(ref[key]))
            for v, d in per_variant.items():
                entry["by_variant"][v] = max(entry["by_variant"].get(v, 0.0), d)
    out = {
        "generator": "scripts/parity_spread.py",
        "cpu": cpu_name(),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "spread": spread,
    }
    for key, e in spread.items():
        print(f"{key:7} max |diff| {e['max_abs_diff']:.2e}  scale {e['scale']:.3f}  "
              f"relative {e['max_abs_diff'] / e['scale']:.2e}  {e['by_variant']}")
    target = ROOT / "tests" / "golden" / "parity_spread.json"
    target.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
