"""Writes tests/golden/deberta-tiny/ (a randomly initialized DebertaV2ForSequenceClassification
saved by transformers, DeBERTa-v3's settings, with a SentencePiece-style Unigram tokenizer
trained here on MRPC sentences by the `tokenizers` library, saved as tokenizer.json) and
tests/golden/deberta.json:

- tokenization: HF's fast tokenizer (AutoTokenizer on that folder) on MRPC validation
  pairs with truncation at 24 tokens: `[CLS] A [SEP] B [SEP]`;
- the model: logits, hidden states at real tokens, cross-entropy loss and gradients of
  the classifier, the ContextPooler, a query projection and the relative-position
  embeddings for a padded batch.

deberta-v3-base's attention settings (relative attention, share_att_key, `p2c|c2p`,
layer-normed relative embeddings, no absolute positions, no token types) with 8
position buckets and max_relative_positions 64, so that 24-token rows reach the
log-bucketed distances (deberta-v3-base: 256 buckets, which only 128+ tokens reach).

No pretrained DeBERTa is reachable here, so the architecture is checked on a tiny random
one (hidden 16, 2 layers, the tokenizer's 300-piece vocabulary). Eval mode, fp32, CPU.

Run: .venv-ref/bin/python scripts/golden_deberta.py
"""
import json

import pyarrow.parquet as pq
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from tokenizers.processors import TemplateProcessing
from transformers import AutoTokenizer, DebertaV2Config, DebertaV2ForSequenceClassification, PreTrainedTokenizerFast

from golden_common import MIRROR, OUT, r6, weights_of

VOCAB = 300
MAX_LENGTH = 24
SPECIAL = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]


def unigram_tokenizer(sentences):
    """deberta-v3-base's pipeline shape: NFKC, Metaspace pre-tokenizer and decoder,
    Unigram model, `[CLS] A [SEP] B [SEP]` with token types 0/1."""
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=VOCAB, special_tokens=SPECIAL, unk_token="[UNK]")
    tok.train_from_iterator(sentences, trainer=trainer)
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return tok


def main():
    folder = OUT / "deberta-tiny"
    folder.mkdir(parents=True, exist_ok=True)
    train = pq.read_table(MIRROR / "mrpc" / "train-00000-of-00001.parquet").to_pydict()
    unigram = unigram_tokenizer(train["sentence1"][:2000] + train["sentence2"][:2000])
    unigram.save(str(folder / "tokenizer.json"))
    tok = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), cls_token="[CLS]",
                                  sep_token="[SEP]", unk_token="[UNK]", pad_token="[PAD]",
                                  mask_token="[MASK]", model_max_length=512,
                                  model_input_names=["input_ids", "token_type_ids", "attention_mask"])
    tok.save_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)

    val = pq.read_table(MIRROR / "mrpc" / "validation-00000-of-00001.parquet").to_pydict()
    rows = list(range(8))
    enc = tok([val["sentence1"][r] for r in rows], [val["sentence2"][r] for r in rows],
              truncation=True, max_length=MAX_LENGTH)

    torch.manual_seed(0)
    config = DebertaV2Config(
        vocab_size=len(tok), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=40, type_vocab_size=0, pad_token_id=0,
        initializer_range=0.2, relative_attention=True, max_relative_positions=64,
        position_buckets=8, norm_rel_ebd="layer_norm", share_att_key=True, pos_att_type="p2c|c2p",
        position_biased_input=False, pooler_hidden_act="gelu", pooler_dropout=0.0,
        id2label={0: "not_equivalent", 1: "equivalent"},
        label2id={"not_equivalent": 0, "equivalent": 1},
    )
    model = DebertaV2ForSequenceClassification(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.05)
            elif "LayerNorm" in name:
                p.normal_(1.0, 0.1)
    model.eval()
    model.save_pretrained(folder)
    weights = weights_of(folder)

    # Three rows of different lengths (cut from the pairs above, `[SEP]` kept last)
    # padded with id 0, so the pairwise mask and the padding matter.
    pad, sep = config.pad_token_id, tok.sep_token_id
    lengths = [MAX_LENGTH, 17, 9]
    ids = torch.full((3, MAX_LENGTH), pad)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.tensor(enc["input_ids"][i][:n - 1] + [sep])
    mask = (ids != pad).long()
    labels = torch.tensor([val["label"][r] for r in rows[:3]])
    out = model(input_ids=ids, attention_mask=mask, labels=labels, output_hidden_states=True)
    out.loss.backward()
    hidden = out.hidden_states[-1]
    params = dict(model.named_parameters())
    grads = {name: r6(params[name].grad) for name in [
        "classifier.weight", "pooler.dense.weight",
        "deberta.encoder.layer.0.attention.self.query_proj.weight",
        "deberta.encoder.rel_embeddings.weight",
    ]}
    golden = {
        "weights": weights,
        "generator": "scripts/golden_deberta.py",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "max_length": MAX_LENGTH,
        "rows": rows,
        "tokenized": {"input_ids": enc["input_ids"], "token_type_ids": enc["token_type_ids"]},
        "input_ids": ids.tolist(),
        "attention_mask": mask.tolist(),
        "labels": labels.tolist(),
        "logits": r6(out.logits.detach()),
        "loss": round(float(out.loss.detach()), 7),
        "hidden_at_real_tokens": [r6(hidden[i, :n].detach()) for i, n in enumerate(lengths)],
        "grads": grads,
    }
    (OUT / "deberta.json").write_text(json.dumps(golden, indent=1) + "\n")
    print(f"wrote {folder} and {OUT / 'deberta.json'}: logits {golden['logits']}")
    print("first pair:", tok.convert_ids_to_tokens(enc["input_ids"][0]))


if __name__ == "__main__":
    main()
