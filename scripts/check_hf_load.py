"""Loads a folder written by glue-rs `save_pretrained` with HF transformers (or a LoRA
adapter folder from `save_adapter` with PEFT, onto its base model) and prints JSON:
missing / unexpected / mismatched keys, and the logits for a fixed input.

Used by crates/bert-model/tests/round_trip.rs (and by hand):
    .venv-ref/bin/python scripts/check_hf_load.py DIR
"""
import json
import sys
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification

INPUT_IDS = [[101, 2023, 2003, 1037, 2307, 3185, 999, 102], [101, 2023, 2003, 102, 0, 0, 0, 0]]


def load_adapter(folder):
    """PEFT's own loading path for an adapter saved by glue-rs."""
    from peft import PeftConfig, get_peft_model, set_peft_model_state_dict
    from peft.utils import load_peft_weights

    config = PeftConfig.from_pretrained(folder)
    weights = load_peft_weights(folder)
    labels = weights["base_model.model.classifier.weight"].shape[0]
    base = AutoModelForSequenceClassification.from_pretrained(config.base_model_name_or_path, num_labels=labels)
    config.inference_mode = True
    model = get_peft_model(base, config)
    result = set_peft_model_state_dict(model, weights)
    # Base weights come from the base model; an adapter must bring its own and the head's.
    missing = [k for k in result.missing_keys if "lora_" in k or "modules_to_save" in k]
    return model, {"missing_keys": missing, "unexpected_keys": result.unexpected_keys, "mismatched_keys": []}


def main():
    if Path(sys.argv[1], "adapter_config.json").exists():
        model, info = load_adapter(sys.argv[1])
    else:
        model, info = AutoModelForSequenceClassification.from_pretrained(sys.argv[1], output_loading_info=True)
    model.eval()
    # Modulo the vocabulary, so tiny test vocabularies take the same input (0 stays padding).
    ids = torch.tensor(INPUT_IDS) % model.config.vocab_size
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
