"""Where evaluation's speed-up over HF comes from: less matmul work, or faster matmuls.

Counts the matmul FLOPs of one evaluation pass as each side runs it and, from the
evaluations of the last `cargo xtask bench-train` (its `target/bench-train/runs`, or
`--runs DIR`), prints each side's matmul rate: the samples/s ratio splits into the work
ratio times the GFLOP/s ratio. `--peak` also times `torch.nn.functional.linear` at
evaluation's shapes, for a sense of this CPU's matmul speed.

- glue-rs: linear layers over the real tokens only (padding-free); the last layer's
  query, output and feed-forward over the first token only (keys and values over all);
  attention over each sequence's own length.
- HF: batches of the eval batch size in dataset order, padded to the longest in the
  batch (DataCollatorWithPadding); every layer over every padded token.

Run: .venv-ref/bin/python scripts/eval_roofline.py [--task mrpc] [--peak]
"""
import argparse
import glob
import json
import os
import time
from pathlib import Path

import pyarrow.parquet as pq
import torch
from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = {
    "cola": ("sentence", None), "sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"),
    "stsb": ("sentence1", "sentence2"), "qnli": ("question", "sentence"),
    "rte": ("sentence1", "sentence2"), "wnli": ("sentence1", "sentence2"),
}


def lengths(task, data_dir, model):
    first, second = COLUMNS[task]
    tokenizer = Tokenizer.from_file(str(model / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(512)
    files = sorted(glob.glob(str(data_dir / task / "validation-*.parquet")))
    table = pq.read_table(files[0]).to_pydict()
    if second is None:
        encodings = tokenizer.encode_batch(table[first])
    else:
        encodings = tokenizer.encode_batch(list(zip(table[first], table[second])))
    return [len(e.ids) for e in encodings]


def flops(lengths, batch, cfg):
    """Matmul FLOPs (2 per multiply-add) of one evaluation: (glue-rs, HF)."""
    h, inter, layers = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
    per_token = 2 * (4 * h * h + 2 * h * inter)  # q, k, v, output; two feed-forward
    kv = 2 * 2 * h * h
    ours = 0
    for s in lengths:
        ours += (layers - 1) * (s * per_token + 2 * 2 * s * s * h)
        ours += s * kv + (per_token - kv) + 2 * 2 * s * h  # last layer, first token's query
    hf = 0
    for i in range(0, len(lengths), batch):
        chunk = lengths[i:i + batch]
        padded = max(chunk)
        hf += len(chunk) * layers * (padded * per_token + 2 * 2 * padded * padded * h)
    return ours, hf


def linear_rate(rows, cfg, threads, dtype):
    """GFLOP/s of F.linear at one layer's three weight shapes, `rows` tokens."""
    torch.set_num_threads(threads)
    h, inter = cfg["hidden_size"], cfg["intermediate_size"]
    shapes = [(h, h)] * 4 + [(h, inter), (inter, h)]  # q, k, v, output; up; down
    xs = [torch.randn(rows, i).to(dtype) for i, _ in shapes]
    ws = [torch.randn(o, i).to(dtype) for i, o in shapes]
    bs = [torch.randn(o).to(dtype) for _, o in shapes]
    work = sum(2 * rows * i * o for i, o in shapes)

    def layer():
        for x, w, b in zip(xs, ws, bs):
            torch.nn.functional.linear(x, w, b)

    with torch.inference_mode():
        for _ in range(10):
            layer()
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(20):
                layer()
            best = min(best, (time.perf_counter() - start) / 20)
    return work / best / 1e9


def bench_evals(runs):
    """Eval samples/s of every evaluation of each run of the last bench-train (the
    log_history of its trainer_state.json, which glue-cli and scripts/hf_train.py write)."""
    found = {}
    for state in sorted(Path(runs).glob("*/trainer_state.json")):
        history = json.loads(state.read_text()).get("log_history", [])
        rates = [e["eval_samples_per_second"] for e in history if "eval_samples_per_second" in e]
        if rates:
            found[state.parent.name] = rates
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="mrpc", choices=sorted(COLUMNS))
    parser.add_argument("--model", type=Path,
                        help="model folder (default: the glue-rs run's, else the test model)")
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "glue-mirror")
    parser.add_argument("--batch-size", type=int,
                        help="eval batch size (default: the glue-rs run's, else 8)")
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--runs", type=Path, default=ROOT / "target" / "bench-train" / "runs")
    parser.add_argument("--peak", action="store_true",
                        help="also time F.linear at evaluation's shapes (noisy on a shared VM)")
    args = parser.parse_args()

    evals = bench_evals(args.runs)
    # The glue-rs run's folder holds its model's config and tokenizer, and its settings.
    ours_dir = next((args.runs / name for name in evals if name.startswith("glue-rs")), None)
    model = args.model or ours_dir or ROOT / ".venv" / "test-model"
    batch = args.batch_size
    if batch is None and ours_dir is not None:
        batch = json.loads((ours_dir / "training_args.json").read_text())["per_device_eval_batch_size"]
    batch = batch or 8
    cfg = json.loads((model / "config.json").read_text())
    lens = lengths(args.task, args.data_dir, model)
    ours, hf = flops(lens, batch, cfg)
    n = len(lens)
    print(f"model {model} ({cfg['num_hidden_layers']} layers, hidden {cfg['hidden_size']}), eval batch {batch}")
    print(f"{args.task} validation: {n} examples, {sum(lens)} tokens ({sum(lens) / n:.1f} per example)")
    print(f"matmul work per evaluation: glue-rs {ours / 1e9:.0f} GFLOP, HF {hf / 1e9:.0f} GFLOP "
          f"(HF does {hf / ours:.2f}x the work: padding, every token in the last layer)")
    if args.peak:
        rows = batch * round(sum(lens) / n)
        kinds = {"fp32": torch.float32, "bf16": torch.bfloat16}
        for kind, dtype in kinds.items():
            rate = linear_rate(rows, cfg, args.threads, dtype)
            print(f"F.linear on this CPU, {args.threads} thread(s), {rows} rows, {kind}: {rate:.0f} GFLOP/s")
    if not evals:
        print(f"(no bench-train runs under {args.runs}: run `cargo xtask bench-train` for the rates)")
        return
    print()
    print("| run | evaluations | eval samples/s (mean) | matmul GFLOP/s |")
    print("|---|---|---|---|")
    achieved = {}
    for name, samples in evals.items():
        mean = sum(samples) / len(samples)
        work = ours if name.startswith("glue-rs") else hf
        achieved[name] = (mean, mean / n * work / 1e9)
        print(f"| {name} | {len(samples)} | {mean:.1f} | {achieved[name][1]:.0f} |")
    print()
    for name, (mean, rate) in achieved.items():
        if not name.startswith("glue-rs"):
            continue
        for other, (their_mean, their_rate) in achieved.items():
            if other.startswith("glue-rs"):
                continue
            print(f"{name} vs {other}: {mean / their_mean:.2f}x the samples/s = "
                  f"{hf / ours:.2f}x less work x {rate / their_rate:.2f}x the GFLOP/s")


if __name__ == "__main__":
    main()
