"""HF Trainer's side of `cargo xtask bench-train`: `glue-cli run` in transformers.

Fine-tunes a local HF model folder on a GLUE task from the parquet mirror with the
Trainer and the same settings glue-cli takes (HF defaults: batch 8, lr 5e-5, linear
schedule, AdamW fused, clipping at 1.0, max_length 128, dynamic padding; eval per
epoch unless told otherwise), then evaluates once more and writes `all_results.json`
into --output-dir with the keys glue-cli writes (train_runtime,
train_samples_per_second, eval_samples_per_second, eval_<metric>), and the Trainer's
`trainer_state.json` (every evaluation's metrics in its log_history).

Run: .venv-ref/bin/python scripts/hf_train.py --task mrpc --model .venv/test-model \
       --data-dir ../shared/glue-mirror --output-dir /tmp/hf-mrpc [--max-steps 50] [--bf16]
"""
import argparse
import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
import transformers
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

# config: (text columns, number of labels, metrics, validation split)
TASKS = {
    "cola": (["sentence"], 2, ["matthews_correlation"], "validation"),
    "sst2": (["sentence"], 2, ["accuracy"], "validation"),
    "mrpc": (["sentence1", "sentence2"], 2, ["accuracy", "f1"], "validation"),
    "qqp": (["question1", "question2"], 2, ["accuracy", "f1"], "validation"),
    "stsb": (["sentence1", "sentence2"], 1, ["pearson", "spearmanr"], "validation"),
    "mnli": (["premise", "hypothesis"], 3, ["accuracy"], "validation_matched"),
    "qnli": (["question", "sentence"], 2, ["accuracy"], "validation"),
    "rte": (["sentence1", "sentence2"], 2, ["accuracy"], "validation"),
    "wnli": (["sentence1", "sentence2"], 2, ["accuracy"], "validation"),
}


def load(data_dir, task, split, tok, max_length):
    columns, num_labels, _, _ = TASKS[task]
    t = pq.read_table(Path(data_dir) / task / f"{split}-00000-of-00001.parquet").to_pydict()
    enc = tok(*[t[c] for c in columns], truncation=True, max_length=max_length)
    labels = [float(x) for x in t["label"]] if num_labels == 1 else t["label"]
    keys = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in enc]
    return [dict({k: enc[k][i] for k in keys}, labels=labels[i]) for i in range(len(labels))]


def metrics_for(task):
    names = TASKS[task][2]

    def compute(p):
        if TASKS[task][1] == 1:
            preds = p.predictions.reshape(-1)
            return {"pearson": float(pearsonr(preds, p.label_ids)[0]),
                    "spearmanr": float(spearmanr(preds, p.label_ids)[0])}
        preds = np.argmax(p.predictions, axis=-1)
        out = {"accuracy": accuracy_score(p.label_ids, preds)}
        if "f1" in names:
            out["f1"] = f1_score(p.label_ids, preds)
        if "matthews_correlation" in names:
            out = {"matthews_correlation": matthews_corrcoef(p.label_ids, preds)}
        return out

    return compute


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="mrpc", choices=sorted(TASKS))
    ap.add_argument("--model", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--output-dir", required=True)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--num-train-epochs", type=float, default=3.0)
    ap.add_argument("--max-steps", type=int, default=-1)
    ap.add_argument("--per-device-train-batch-size", type=int, default=8)
    ap.add_argument("--per-device-eval-batch-size", type=int, default=8)
    ap.add_argument("--eval-strategy", default="epoch")
    ap.add_argument("--max-seq-length", type=int, default=128)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    tok = AutoTokenizer.from_pretrained(a.model)
    _, num_labels, _, eval_split = TASKS[a.task]
    train = load(a.data_dir, a.task, "train", tok, a.max_seq_length)
    validation = load(a.data_dir, a.task, eval_split, tok, a.max_seq_length)
    transformers.set_seed(a.seed)
    model = AutoModelForSequenceClassification.from_pretrained(a.model, num_labels=num_labels)
    args = TrainingArguments(
        output_dir=a.output_dir, eval_strategy=a.eval_strategy, save_strategy="no",
        num_train_epochs=a.num_train_epochs, max_steps=a.max_steps,
        per_device_train_batch_size=a.per_device_train_batch_size,
        per_device_eval_batch_size=a.per_device_eval_batch_size,
        seed=a.seed, bf16=a.bf16, report_to=[], use_cpu=a.device == "cpu",
        disable_tqdm=True, logging_steps=500,
    )
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=validation,
                      data_collator=DataCollatorWithPadding(tok), compute_metrics=metrics_for(a.task))
    out = trainer.train()
    metrics = dict(out.metrics)
    metrics.update(trainer.evaluate())
    metrics.update({"optim": str(args.optim), "torch_threads": torch.get_num_threads(),
                    "transformers": transformers.__version__, "torch": torch.__version__})
    os.makedirs(a.output_dir, exist_ok=True)
    Path(a.output_dir, "all_results.json").write_text(json.dumps(metrics, indent=1) + "\n")
    # Every evaluation's metrics (the after-epoch ones and the final one), as glue-cli
    # writes them: bench-train averages their samples/s.
    trainer.state.save_to_json(str(Path(a.output_dir, "trainer_state.json")))
    print(json.dumps({k: v for k, v in metrics.items() if "runtime" in k or "per_second" in k or k.startswith("eval_")}))


if __name__ == "__main__":
    main()
