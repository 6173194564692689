"""Preprocessing speed: glue-rs (criterion) vs the HF Python path, same machine, same data.

The Python path is what `datasets.map(tokenize, batched=True)` does for the seed
notebook: read the parquet file, then call the fast tokenizer on batches of 1000
examples with truncation. (It leaves out the Arrow cache writes `datasets` adds, so
it is a lower bound on the Python time.) The Rust figure is the mean of the criterion
benchmark `preprocess/<split>` (parquet read + tokenization), which this script runs.

Run: .venv-ref/bin/python scripts/bench_tokenize.py
"""
import json
import os
import statistics
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
from transformers import AutoTokenizer

ROOT = Path(__file__).resolve().parent.parent
MIRROR = Path(os.environ.get("GLUE_MIRROR", ROOT.parent / "shared" / "glue-mirror"))
MODEL = Path(os.environ.get("GLUE_TEST_MODEL", ROOT / ".venv" / "test-model"))
SPLITS = {"sst2_train": ("sst2", ["sentence"]), "mrpc_train": ("mrpc", ["sentence1", "sentence2"])}


def python_seconds(tok, config, columns, repeats=5):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        table = pq.read_table(MIRROR / config / "train-00000-of-00001.parquet").to_pydict()
        n = len(table[columns[0]])
        for i in range(0, n, 1000):
            batch = [table[c][i : i + 1000] for c in columns]
            tok(*batch, truncation=True, max_length=128)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def rust_seconds(name):
    est = ROOT / "target" / "criterion" / "preprocess" / name / "new" / "estimates.json"
    return json.loads(est.read_text())["median"]["point_estimate"] / 1e9


def main():
    subprocess.run(
        ["cargo", "bench", "-p", "glue-data", "--bench", "preprocess", "--", "--noplot"],
        cwd=ROOT,
        check=True,
    )
    tok = AutoTokenizer.from_pretrained(str(MODEL))
    print(f"{'split':<12} {'glue-rs s':>10} {'HF python s':>12} {'speed-up':>9}")
    for name, (config, columns) in SPLITS.items():
        rust = rust_seconds(name)
        py = python_seconds(tok, config, columns)
        print(f"{name:<12} {rust:>10.3f} {py:>12.3f} {py / rust:>8.2f}x")


if __name__ == "__main__":
    main()
