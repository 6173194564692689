"""Writes tests/golden/distilbert-tiny/ (a randomly initialized DistilBertForSequenceClassification
saved by transformers' save_pretrained: config.json; its weights go into the JSON) and
tests/golden/distilbert.json: its logits, hidden states at real tokens, cross-entropy
loss and the gradient of classifier.weight for a padded batch of three rows.

No pretrained DistilBERT is reachable here, so the architecture is checked on a tiny
random one (vocabulary 100, dim 16, 2 layers); the Rust side loads the very folder HF
saved and must reproduce HF's numbers. Eval mode (no dropout), fp32, CPU.

Run: .venv-ref/bin/python scripts/golden_distilbert.py
"""
import json

import torch
import transformers
from transformers import DistilBertConfig, DistilBertForSequenceClassification

from golden_common import OUT, r6, weights_of


def main():
    torch.manual_seed(0)
    config = DistilBertConfig(
        vocab_size=100,
        max_position_embeddings=64,
        dim=16,
        n_layers=2,
        n_heads=2,
        hidden_dim=32,
        dropout=0.1,
        attention_dropout=0.1,
        seq_classif_dropout=0.2,
        initializer_range=0.2,  # larger than HF's 0.02, so logits are far from zero
        id2label={0: "not_equivalent", 1: "equivalent"},
        label2id={"not_equivalent": 0, "equivalent": 1},
    )
    model = DistilBertForSequenceClassification(config)
    # HF's init leaves biases at zero; random ones make the check see every bias.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.05)
    model.eval()
    folder = OUT / "distilbert-tiny"
    model.save_pretrained(folder)
    weights = weights_of(folder)

    lengths = [7, 5, 3]
    seq = max(lengths)
    ids = torch.randint(1, 100, (len(lengths), seq))
    mask = torch.zeros(len(lengths), seq, dtype=torch.long)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    ids = ids * mask  # padding id 0
    labels = torch.tensor([0, 1, 1])
    out = model(input_ids=ids, attention_mask=mask, labels=labels, output_hidden_states=True)
    out.loss.backward()
    out.loss = out.loss.detach()
    hidden = out.hidden_states[-1]
    real = [r6(hidden[row, :n]) for row, n in enumerate(lengths)]
    golden = {
        "weights": weights,
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "input_ids": ids.tolist(),
        "attention_mask": mask.tolist(),
        "labels": labels.tolist(),
        "logits": r6(out.logits),
        "loss": round(float(out.loss), 7),
        "hidden_at_real_tokens": real,
        "classifier_weight_grad": r6(model.classifier.weight.grad),
        "pre_classifier_weight_grad": r6(model.pre_classifier.weight.grad),
    }
    (OUT / "distilbert.json").write_text(json.dumps(golden, indent=1) + "\n")
    print(f"wrote {folder} and {OUT / 'distilbert.json'}: logits {golden['logits']}")


if __name__ == "__main__":
    main()
