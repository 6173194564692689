"""Writes tests/golden/trainer.json: the first optimizer steps of HF's Trainer, the
reference for glue-rs's Trainer wiring (schedule step index, gradient-accumulation
scaling, clip-then-step, decay groups, fused AdamW, what is logged when).

MRPC train, the test model with a classifier head initialized here (written to the
golden so glue-rs installs the same one), dropout off (hidden, attention and classifier
dropout 0, so both trainers compute the same function), batch 4, gradient accumulation
2, weight decay 0.01, warmup 2 steps, 5 steps, logging every step. Loss averaged over
the accumulation group (see the note in main about transformers 5.24). The Trainer reads
the examples in glue-rs's order for seed 42, epoch 0 (glue-data's SplitMix64 shuffle,
re-implemented below), so both see the same batches.

Run: .venv-ref/bin/python scripts/golden_trainer.py
"""
import json
from pathlib import Path

import torch
import transformers
from torch.utils.data import Sampler
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

import golden_model as gm
from hf_train import load

ROOT = Path(__file__).resolve().parent.parent
M64 = (1 << 64) - 1
SETTINGS = {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 2,
            "weight_decay": 0.01, "warmup_steps": 2, "max_steps": 5, "learning_rate": 5e-5,
            "seed": 42, "max_seq_length": 128}


class SplitMix64:
    def __init__(self, seed):
        self.state = seed & M64

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & M64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        return z ^ (z >> 31)

    def below(self, n):
        zone = M64 - (M64 % n)
        while True:
            x = self.next()
            if x < zone:
                return x % n


def shuffled_indices(n, seed, epoch):
    """glue_data::sampler::shuffled_indices."""
    rng = SplitMix64(seed ^ ((epoch * 0xA24BAED4963EE407) & M64))
    order = list(range(n))
    for i in range(n - 1, 0, -1):
        j = rng.below(i + 1)
        order[i], order[j] = order[j], order[i]
    return order


class FixedOrder(Sampler):
    def __init__(self, order):
        self.order = order

    def __iter__(self):
        return iter(self.order)

    def __len__(self):
        return len(self.order)


class OrderedTrainer(Trainer):
    def __init__(self, *a, order, **kw):
        super().__init__(*a, **kw)
        self.order = order

    def _get_train_sampler(self, *args, **kwargs):
        return FixedOrder(self.order)


def main():
    torch.set_num_threads(1)
    s = SETTINGS
    tok = AutoTokenizer.from_pretrained(str(gm.MODEL))
    train = load(str(gm.MIRROR), "mrpc", "train", tok, s["max_seq_length"])
    transformers.set_seed(s["seed"])
    model = AutoModelForSequenceClassification.from_pretrained(
        str(gm.MODEL), num_labels=2, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
    head = gm.head(model)
    args = TrainingArguments(
        output_dir="/tmp/golden-trainer", eval_strategy="no", save_strategy="no",
        per_device_train_batch_size=s["per_device_train_batch_size"],
        gradient_accumulation_steps=s["gradient_accumulation_steps"],
        weight_decay=s["weight_decay"], warmup_steps=s["warmup_steps"],
        max_steps=s["max_steps"], learning_rate=s["learning_rate"], seed=s["seed"],
        logging_steps=1, report_to=[], use_cpu=True, disable_tqdm=True,
    )
    order = shuffled_indices(len(train), s["seed"], 0)
    trainer = OrderedTrainer(model=model, args=args, train_dataset=train,
                             data_collator=DataCollatorWithPadding(tok), order=order)
    # transformers 5.24 sees **kwargs on BertForSequenceClassification.forward, passes
    # it num_items_in_batch and skips dividing by gradient_accumulation_steps; BERT's
    # CrossEntropyLoss ignores num_items_in_batch, so loss and gradients come out summed
    # over the micro-batches (2x the mean here). glue-rs, like HF for any model whose
    # loss does not take num_items_in_batch, averages over the accumulation group: the
    # reference is HF on that documented path.
    trainer.model_accepts_loss_kwargs = False
    trainer.train()
    steps = [{k: e[k] for k in ("step", "loss", "grad_norm", "learning_rate")}
             for e in trainer.state.log_history if "loss" in e]
    out = {
        "generator": "scripts/golden_trainer.py",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "optim": str(args.optim),
        "settings": s,
        "first_rows": order[:s["max_steps"] * s["per_device_train_batch_size"] * s["gradient_accumulation_steps"]],
        "classification_head": head,
        "steps": steps,
    }
    for row in steps:
        print(row)
    target = ROOT / "tests" / "golden" / "trainer.json"
    target.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
