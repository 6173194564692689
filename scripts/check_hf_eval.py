"""Loads a glue-cli output folder in HF transformers and scores the MRPC validation split
with HF's own tokenizer and model code; prints accuracy/F1 next to glue-cli's
eval_results.json from the same folder.

Run: .venv-ref/bin/python scripts/check_hf_eval.py OUTPUT_DIR
"""
import json
import os
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from sklearn.metrics import accuracy_score, f1_score
from transformers import AutoModelForSequenceClassification, AutoTokenizer

ROOT = Path(__file__).resolve().parent.parent
MIRROR = Path(os.environ.get("GLUE_MIRROR", ROOT.parent / "shared" / "glue-mirror"))


def main():
    folder = Path(sys.argv[1])
    tok = AutoTokenizer.from_pretrained(str(folder))
    model, info = AutoModelForSequenceClassification.from_pretrained(str(folder), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    model.eval()
    t = pq.read_table(MIRROR / "mrpc" / "validation-00000-of-00001.parquet").to_pydict()
    preds = []
    with torch.no_grad():
        for i in range(0, len(t["label"]), 32):
            enc = tok(t["sentence1"][i:i + 32], t["sentence2"][i:i + 32], truncation=True,
                      max_length=128, padding=True, return_tensors="pt")
            preds.extend(model(**enc).logits.argmax(-1).tolist())
    ours = json.loads((folder / "eval_results.json").read_text())
    hf = {"eval_accuracy": accuracy_score(t["label"], preds), "eval_f1": f1_score(t["label"], preds)}
    print(json.dumps({"hf_transformers": hf, "glue_cli": {k: ours[k] for k in hf}}))
    same = all(abs(hf[k] - ours[k]) < 1e-9 for k in hf)
    print("same accuracy and F1" if same else "DIFFERENT")
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
