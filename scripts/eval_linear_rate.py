"""fp32 matmul rate at evaluation's real layout: one batch per core, six layers' weights.

glue-rs's CPU evaluation runs one batch per intra-op thread, each on one thread, and a
batch walks through every layer's weights (7 MB a layer for MiniLM, more than a core's
L2), so `scripts/linear_peak.py`'s rate (one weight, hot in cache, both threads on one
GEMM) is not quite what evaluation can reach. This runs the encoder's linear layers
(q, k, v, output, two feed-forward) over six layers of their own weights, for batches
of MRPC-like row counts, in as many processes as there are cores at once, one thread
each, through oneDNN's packed inner product (glue-rs's path), `torch.addmm` on the
transposed weight (MKL) and `F.linear`; it prints GFLOP/s per process.

    .venv-ref/bin/python scripts/eval_linear_rate.py [--processes 2] [--hidden 384]

Compare with glue-rs's evaluation: its linear layers' FLOPs (scripts/eval_roofline.py)
over their time per thread.
"""
import argparse
import multiprocessing as mp
import random
import time

import torch


def rates(hidden, inter, queue):
    torch.set_num_threads(1)
    rng = random.Random(0)
    rows = [rng.randrange(200, 900, 8) for _ in range(26)]  # tokens in a batch of 8 pairs
    layers = []
    for _ in range(6):
        shapes = [(hidden, hidden)] * 4 + [(inter, hidden), (hidden, inter)]
        ws = [torch.randn(o, i) for o, i in shapes]
        layers.append([(w, torch.randn(w.shape[0]), torch.ops.mkldnn._reorder_linear_weight(w, 512),
                        w.t().contiguous()) for w in ws])
    inputs = {(m, k): torch.randn(m, k) for m in rows for k in (hidden, inter)}
    paths = {
        "oneDNN packed": lambda x, w, b, p, t: torch.ops.mkldnn._linear_pointwise(x, p, b, "none", [], ""),
        "addmm (MKL)": lambda x, w, b, p, t: torch.addmm(b, x, t),
        "F.linear": lambda x, w, b, p, t: torch.nn.functional.linear(x, w, b),
    }
    flops = sum(2 * m * w.shape[0] * w.shape[1] for m in rows for layer in layers for w, *_ in layer)
    out = {}
    for name, f in paths.items():
        best = 0.0
        for _ in range(2):
            start = time.perf_counter()
            for m in rows:
                for layer in layers:
                    for w, b, p, t in layer:
                        f(inputs[(m, w.shape[1])], w, b, p, t)
            best = max(best, flops / (time.perf_counter() - start) / 1e9)
        out[name] = best
    queue.put(out)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=384)
    args = parser.parse_args()
    queue = mp.get_context("fork").Queue()
    procs = [mp.get_context("fork").Process(target=rates, args=(args.hidden, 4 * args.hidden, queue))
             for _ in range(args.processes)]
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    for name in results[0]:
        print(f"{name:>14}: " + ", ".join(f"{r[name]:.1f}" for r in results) + " GFLOP/s a process")


if __name__ == "__main__":
    main()
