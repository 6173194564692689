"""Model speed: glue-rs (criterion bench `minilm_b16_s64`) vs HF transformers, CPU,
the same model (all-MiniLM-L6-v2 + classifier), shapes (batch 16 x 64) and threads.

Run: .venv-ref/bin/python scripts/bench_model.py [THREADS]   (default 1)
"""
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from transformers import BertForSequenceClassification

ROOT = Path(__file__).resolve().parent.parent
MODEL = Path(os.environ.get("GLUE_TEST_MODEL", ROOT / ".venv" / "test-model"))


def timed(fn, repeats=20):
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 1
    subprocess.run(
        ["cargo", "bench", "-p", "bert-model", "--bench", "forward", "--", "--noplot"],
        cwd=ROOT, check=True, env={**os.environ, "BENCH_THREADS": str(threads)},
    )
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(str(MODEL), num_labels=2)
    ids = torch.randint(1000, 30000, (16, 64))
    batch = dict(input_ids=ids, token_type_ids=torch.zeros_like(ids), attention_mask=torch.ones_like(ids))
    labels = torch.randint(0, 2, (16,))

    def forward():
        model.eval()
        with torch.no_grad():
            model(**batch)

    def forward_backward():
        model.train()
        model(**batch, labels=labels).loss.backward()
        model.zero_grad()

    print(f"threads: {threads}")
    print(f"{'step':<18} {'glue-rs ms':>10} {'HF ms':>8} {'ratio HF/ours':>14}")
    for name, fn in [("forward", forward), ("forward_backward", forward_backward)]:
        est = ROOT / "target" / "criterion" / "minilm_b16_s64" / name / "new" / "estimates.json"
        ours = json.loads(est.read_text())["median"]["point_estimate"] / 1e6
        theirs = timed(fn) * 1e3
        print(f"{name:<18} {ours:>10.1f} {theirs:>8.1f} {theirs / ours:>13.2f}x")


if __name__ == "__main__":
    main()
