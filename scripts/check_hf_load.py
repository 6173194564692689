"""Loads a folder written by glue-rs `save_pretrained` with HF transformers and prints
JSON: missing / unexpected / mismatched keys, and the logits for a fixed input.

Used by crates/bert-model/tests/round_trip.rs (and by hand):
    .venv-ref/bin/python scripts/check_hf_load.py DIR
"""
import json
import sys

import torch
from transformers import AutoModelForSequenceClassification

INPUT_IDS = [[101, 2023, 2003, 1037, 2307, 3185, 999, 102], [101, 2023, 2003, 102, 0, 0, 0, 0]]


def main():
    model, info = AutoModelForSequenceClassification.from_pretrained(sys.argv[1], output_loading_info=True)
    model.eval()
    ids = torch.tensor(INPUT_IDS)
    with torch.no_grad():
        # DistilBERT has no token types; BERT gets zeros, as glue-rs's fixed input has.
        types = {} if model.config.model_type == "distilbert" else {"token_type_ids": torch.zeros_like(ids)}
        logits = model(input_ids=ids, attention_mask=(ids != 0).long(), **types).logits
    print(
        json.dumps(
            {
                "class": type(model).__name__,
                "missing_keys": sorted(info["missing_keys"]),
                "unexpected_keys": sorted(info["unexpected_keys"]),
                "mismatched_keys": [list(map(str, k)) for k in info["mismatched_keys"]],
                "id2label": {str(k): v for k, v in model.config.id2label.items()},
                "logits": logits.flatten().tolist(),
            }
        )
    )


if __name__ == "__main__":
    main()
