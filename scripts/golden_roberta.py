"""Writes tests/golden/roberta-tiny/ (a randomly initialized RobertaForSequenceClassification
saved by transformers, with a byte-level BPE tokenizer trained here on MRPC sentences by
the `tokenizers` library and saved as tokenizer.json) and tests/golden/roberta.json:

- tokenization: HF's fast tokenizer (AutoTokenizer on that folder) on MRPC validation
  pairs with truncation at 24 tokens: `<s> A </s></s> B </s>`, no token types;
- the model: logits, hidden states at real tokens, cross-entropy loss and the gradient
  of the head's out_proj for a padded batch (padding id 1, positions from padding_idx+1).

No pretrained RoBERTa is reachable here, so the architecture is checked on a tiny random
one (hidden 16, 2 layers, the tokenizer's 300-token vocabulary). Eval mode, fp32, CPU.

Run: .venv-ref/bin/python scripts/golden_roberta.py
"""
import json

import pyarrow.parquet as pq
import torch
import transformers
from tokenizers import ByteLevelBPETokenizer
from tokenizers.processors import RobertaProcessing
from transformers import AutoTokenizer, PreTrainedTokenizerFast, RobertaConfig, RobertaForSequenceClassification

from golden_common import MIRROR, OUT, r6, weights_of

VOCAB = 300
MAX_LENGTH = 24


def main():
    folder = OUT / "roberta-tiny"
    folder.mkdir(parents=True, exist_ok=True)
    train = pq.read_table(MIRROR / "mrpc" / "train-00000-of-00001.parquet").to_pydict()
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(train["sentence1"][:2000] + train["sentence2"][:2000], vocab_size=VOCAB,
                            min_frequency=2, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    # roberta-base's pipeline: byte-level pre-tokenizer and decoder, `<s> A </s></s> B </s>`.
    bpe._tokenizer.post_processor = RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True,
                                                     add_prefix_space=False)
    bpe.save(str(folder / "tokenizer.json"))
    tok = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), bos_token="<s>",
                                  eos_token="</s>", sep_token="</s>", cls_token="<s>", unk_token="<unk>",
                                  pad_token="<pad>", mask_token="<mask>", model_max_length=512,
                                  model_input_names=["input_ids", "attention_mask"])
    tok.save_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)

    val = pq.read_table(MIRROR / "mrpc" / "validation-00000-of-00001.parquet").to_pydict()
    rows = list(range(8))
    enc = tok([val["sentence1"][r] for r in rows], [val["sentence2"][r] for r in rows],
              truncation=True, max_length=MAX_LENGTH)

    torch.manual_seed(0)
    config = RobertaConfig(
        vocab_size=len(tok), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=40, type_vocab_size=1, pad_token_id=1,
        bos_token_id=0, eos_token_id=2, initializer_range=0.2,
        id2label={0: "not_equivalent", 1: "equivalent"},
        label2id={"not_equivalent": 0, "equivalent": 1},
    )
    model = RobertaForSequenceClassification(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.05)
    model.eval()
    model.save_pretrained(folder)
    weights = weights_of(folder)

    # Three rows of different lengths (cut from the pairs above, `</s>` kept last) padded
    # with id 1, so padding and RoBERTa's padding-derived positions matter.
    lengths = [MAX_LENGTH, 17, 9]
    ids = torch.full((3, MAX_LENGTH), config.pad_token_id)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.tensor(enc["input_ids"][i][:n - 1] + [2])
    mask = (ids != config.pad_token_id).long()
    batch = {"input_ids": ids, "attention_mask": mask}
    labels = torch.tensor([val["label"][r] for r in rows[:3]])
    out = model(input_ids=ids, attention_mask=mask, labels=labels, output_hidden_states=True)
    out.loss.backward()
    hidden = out.hidden_states[-1]
    golden = {
        "weights": weights,
        "generator": "scripts/golden_roberta.py",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "max_length": MAX_LENGTH,
        "rows": rows,
        "tokenized": {"input_ids": enc["input_ids"], "has_token_type_ids": "token_type_ids" in enc},
        "input_ids": batch["input_ids"].tolist(),
        "attention_mask": batch["attention_mask"].tolist(),
        "labels": labels.tolist(),
        "logits": r6(out.logits.detach()),
        "loss": round(float(out.loss.detach()), 7),
        "hidden_at_real_tokens": [r6(hidden[i, :n].detach()) for i, n in enumerate(lengths)],
        "out_proj_weight_grad": r6(model.classifier.out_proj.weight.grad),
        "dense_weight_grad": r6(model.classifier.dense.weight.grad),
    }
    (OUT / "roberta.json").write_text(json.dumps(golden, indent=1) + "\n")
    print(f"wrote {folder} and {OUT / 'roberta.json'}: logits {golden['logits']}")
    print("first pair:", tok.convert_ids_to_tokens(enc["input_ids"][0]))


if __name__ == "__main__":
    main()
