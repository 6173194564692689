"""fp32 linear speed at evaluation's shapes: MKL's F.linear (what HF runs) against
oneDNN's matmul on a weight packed once (what glue-rs' evaluation runs through
torch-shim: mkldnn::_reorder_linear_weight, then mkldnn::_linear_pointwise).

    .venv-ref/bin/python scripts/linear_peak.py [--threads 2]

Prints microseconds per call and GFLOP/s for each shape. If the packed path is at
the machine's fp32 GEMM peak, evaluation's ratio to HF can only come from work HF
does and glue-rs does not (padding, time outside the matmuls)."""

import argparse
import time

import torch


def per_call_us(f, calls=200, warmup=20):
    for _ in range(warmup):
        f()
    start = time.perf_counter()
    for _ in range(calls):
        f()
    return (time.perf_counter() - start) / calls * 1e6


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    # MiniLM's linears (hidden 384, intermediate 1536) at MRPC evaluation's packed row counts.
    with torch.no_grad():
        for rows in (416, 464):
            for k, n in ((384, 384), (384, 1536), (1536, 384)):
                x = torch.randn(rows, k)
                w = torch.randn(n, k) * 0.02
                b = torch.randn(n)
                packed = torch.ops.mkldnn._reorder_linear_weight(w, rows)
                mkl = per_call_us(lambda: torch.nn.functional.linear(x, w, b))
                onednn = per_call_us(
                    lambda: torch.ops.mkldnn._linear_pointwise(x, packed, b, "none", [], "")
                )
                flop = 2 * rows * k * n
                print(
                    f"{rows} rows, {k}x{n}: MKL F.linear {mkl:7.1f} us ({flop / mkl / 1e3:4.0f} GFLOP/s), "
                    f"oneDNN packed {onednn:7.1f} us ({flop / onednn / 1e3:4.0f} GFLOP/s)"
                )


if __name__ == "__main__":
    main()
