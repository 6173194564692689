"""The seed workflow in HF transformers, for the band glue-cli's MRPC run must land in.

Fine-tunes the test model (all-MiniLM-L6-v2 + a new classifier head) on GLUE MRPC
with the Trainer's defaults as the seed uses them (3 epochs, batch 8, lr 5e-5,
linear schedule, eval every epoch, max_length 128, dynamic padding), on CPU, for
each seed given, and prints validation accuracy/F1, wall time and samples/s.

Run: .venv-ref/bin/python scripts/hf_trainer_mrpc.py [SEED ...]   (default 42 43 44)
Writes tests/golden/hf_trainer_mrpc.json: these seeds' runs replace the file's runs of the
same seeds; the other seeds' runs stay.
"""
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
import transformers
from sklearn.metrics import accuracy_score, f1_score
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

ROOT = Path(__file__).resolve().parent.parent
MIRROR = Path(os.environ.get("GLUE_MIRROR", ROOT.parent / "shared" / "glue-mirror"))
MODEL = Path(os.environ.get("GLUE_TEST_MODEL", ROOT / ".venv" / "test-model"))


def load(split, tok):
    t = pq.read_table(MIRROR / "mrpc" / f"{split}-00000-of-00001.parquet").to_pydict()
    enc = tok(t["sentence1"], t["sentence2"], truncation=True, max_length=128)
    return [
        {"input_ids": i, "token_type_ids": tt, "attention_mask": m, "labels": l}
        for i, tt, m, l in zip(enc["input_ids"], enc["token_type_ids"], enc["attention_mask"], t["label"])
    ]


def compute_metrics(p):
    preds = np.argmax(p.predictions, axis=-1)
    return {"accuracy": accuracy_score(p.label_ids, preds), "f1": f1_score(p.label_ids, preds)}


def run(seed, tok, train, validation):
    transformers.set_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(str(MODEL), num_labels=2)
    args = TrainingArguments(
        output_dir=f"/tmp/hf-mrpc-{seed}", eval_strategy="epoch", save_strategy="no",
        seed=seed, report_to=[], use_cpu=True, disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=validation,
                      data_collator=DataCollatorWithPadding(tok), compute_metrics=compute_metrics)
    start = time.time()
    out = trainer.train()
    wall = time.time() - start
    metrics = trainer.evaluate()
    return {
        "seed": seed, "eval_accuracy": metrics["eval_accuracy"], "eval_f1": metrics["eval_f1"],
        "eval_loss": metrics["eval_loss"], "train_runtime": out.metrics["train_runtime"],
        "train_samples_per_second": out.metrics["train_samples_per_second"], "wall_s": wall,
        "epochs": [
            {k: e[k] for k in ("epoch", "eval_loss", "eval_accuracy", "eval_f1")}
            for e in trainer.state.log_history if "eval_accuracy" in e
        ],
    }


def main():
    seeds = [int(s) for s in sys.argv[1:]] or [42, 43, 44]
    print(f"torch threads: {torch.get_num_threads()}", file=sys.stderr)
    tok = AutoTokenizer.from_pretrained(str(MODEL))
    train, validation = load("train", tok), load("validation", tok)
    results = [run(s, tok, train, validation) for s in seeds]
    print(f"{'seed':>5} {'accuracy':>9} {'f1':>7} {'train s':>8} {'samples/s':>10}")
    for r in results:
        print(f"{r['seed']:>5} {r['eval_accuracy']:>9.4f} {r['eval_f1']:>7.4f} {r['train_runtime']:>8.1f} {r['train_samples_per_second']:>10.2f}")
    target = ROOT / "tests" / "golden" / "hf_trainer_mrpc.json"
    kept = json.loads(target.read_text())["runs"] if target.exists() else []
    runs = sorted([r for r in kept if r["seed"] not in seeds] + results, key=lambda r: r["seed"])
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"transformers": transformers.__version__, "torch": torch.__version__,
                               "runs": runs}, indent=1) + "\n")
    tmp.replace(target)


if __name__ == "__main__":
    main()
