"""Writes tests/golden/lora.json: PEFT LoRA fine-tuning under HF's Trainer, the reference
for glue-rs's LoRA (adapter placement and scaling, frozen base, trained head, which
weights the optimizer sees and decays, the gradient norm over trainable weights only).

The test model with dropout off and a classifier head initialized here, PEFT's
LoraConfig(task_type=SEQ_CLS, r=2, lora_alpha=4, lora_dropout=0) on its default targets
(query, value), MRPC train in glue-rs's order for seed 42 (as scripts/golden_trainer.py),
batch 4, lr 1e-3, weight decay 0.01, 4 steps, logging every step. Written out: the
head and every initial lora_A (random in PEFT; glue-rs installs them), per step the
loss, grad_norm and learning rate, and after training layer 0's lora_B of query and
value and the classifier weight, and how far the same run with eager attention lands
from them (HF's own spread, which the test's bound is a multiple of).

Run: .venv-ref/bin/python scripts/golden_lora.py
"""
import json
from pathlib import Path

import peft
import torch
import transformers
from peft import LoraConfig, TaskType, get_peft_model
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, TrainingArguments

import golden_model as gm
from golden_trainer import OrderedTrainer, shuffled_indices
from hf_train import load

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "base_model.model."
SETTINGS = {"per_device_train_batch_size": 4, "gradient_accumulation_steps": 1,
            "weight_decay": 0.01, "warmup_steps": 0, "max_steps": 4, "learning_rate": 1e-3,
            "seed": 42, "max_seq_length": 128, "lora_r": 2, "lora_alpha": 4.0}


def train(attn_implementation):
    """PEFT LoRA under the Trainer; returns (model, log rows, initial lora_A, head)."""
    torch.set_num_threads(1)
    s = SETTINGS
    tok = AutoTokenizer.from_pretrained(str(gm.MODEL))
    train = load(str(gm.MIRROR), "mrpc", "train", tok, s["max_seq_length"])
    transformers.set_seed(s["seed"])
    base = AutoModelForSequenceClassification.from_pretrained(
        str(gm.MODEL), num_labels=2, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, classifier_dropout=0.0,
        attn_implementation=attn_implementation)
    head = gm.head(base)
    model = get_peft_model(base, LoraConfig(task_type=TaskType.SEQ_CLS, r=s["lora_r"],
                                            lora_alpha=s["lora_alpha"], lora_dropout=0.0))
    initial_a = {n[len(PREFIX):].replace(".default", ""): gm.exact(p.detach())
                 for n, p in model.named_parameters() if ".lora_A." in n}
    args = TrainingArguments(
        output_dir="/tmp/golden-lora", eval_strategy="no", save_strategy="no",
        per_device_train_batch_size=s["per_device_train_batch_size"],
        gradient_accumulation_steps=s["gradient_accumulation_steps"],
        weight_decay=s["weight_decay"], warmup_steps=s["warmup_steps"],
        max_steps=s["max_steps"], learning_rate=s["learning_rate"], seed=s["seed"],
        logging_steps=1, report_to=[], use_cpu=True, disable_tqdm=True,
    )
    order = shuffled_indices(len(train), s["seed"], 0)
    trainer = OrderedTrainer(model=model, args=args, train_dataset=train,
                             data_collator=DataCollatorWithPadding(tok), order=order)
    trainer.model_accepts_loss_kwargs = False
    trainer.train()
    steps = [{k: e[k] for k in ("step", "loss", "grad_norm", "learning_rate")}
             for e in trainer.state.log_history if "loss" in e]
    return model, steps, initial_a, head


def final_weights(model):
    """Layer 0's lora_B of query and value and the classifier weight, by glue-rs name."""
    params = dict(model.named_parameters())
    layer0 = PREFIX + "bert.encoder.layer.0.attention.self."
    return {
        "bert.encoder.layer.0.attention.self.query.lora_B.weight":
            gm.exact(params[layer0 + "query.lora_B.default.weight"].detach()),
        "bert.encoder.layer.0.attention.self.value.lora_B.weight":
            gm.exact(params[layer0 + "value.lora_B.default.weight"].detach()),
        "classifier.weight":
            gm.exact(params[PREFIX + "classifier.modules_to_save.default.weight"].detach()),
    }


def main():
    model, steps, initial_a, head = train("sdpa")
    final = final_weights(model)
    # HF disagreeing with itself: the same run with eager attention. Adam turns fp32
    # noise in small gradients into visible weight differences (lr-sized steps whose
    # sign the noise decides); the test's bound on the weights is a multiple of this.
    eager = final_weights(train("eager")[0])
    out = {
        "generator": "scripts/golden_lora.py",
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "torch": torch.__version__,
        "settings": SETTINGS,
        "classification_head": head,
        "initial_lora_A": initial_a,
        "steps": steps,
        "final": final,
        "final_spread_eager_vs_sdpa": {
            k: max(abs(a - b) for a, b in zip(final[k], eager[k])) for k in final},
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    for row in steps:
        print(row)
    target = ROOT / "tests" / "golden" / "lora.json"
    target.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
