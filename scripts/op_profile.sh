#!/usr/bin/env bash
# Per-op milliseconds per training step of `glue-cli run` (main thread), from the
# RecordFunction observer in op_profile.cpp: runs SHORT and LONG steps and prints the
# difference per step, so start-up and the final evaluation cancel out.
#   scripts/op_profile.sh [--bf16] [SHORT=10] [LONG=160]
# Needs g++ and the project venv (`cargo xtask setup`), and a release build of glue-cli.
set -euo pipefail
cd "$(dirname "$0")/.."
flags=()
if [[ "${1:-}" == "--bf16" ]]; then flags+=(--bf16); shift; fi
short=${1:-10}
long=${2:-160}
torch=$PWD/.venv/torch
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
g++ -O2 -std=c++17 -shared -fPIC scripts/op_profile.cpp -I"$torch/include" \
  -I"$torch/include/torch/csrc/api/include" -L"$torch/lib" -ltorch_cpu -lc10 -o "$work/libop_profile.so"
for n in "$short" "$long"; do
  PROF_OUT="$work/ops$n.txt" LD_PRELOAD="$work/libop_profile.so" LD_LIBRARY_PATH="$torch/lib" \
    OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} target/release/glue-cli-torch run --task mrpc \
    --model .venv/test-model --data-dir ../shared/glue-mirror --seed 42 \
    --per-device-train-batch-size 8 --max-steps "$n" --eval-strategy no --save-strategy no \
    --device cpu --output-dir "$work/out" "${flags[@]}" 2>&1 | grep -o "steps, [0-9.]* s"
done
python3 - "$work/ops$short.txt" "$work/ops$long.txt" $((long - short)) <<'PY'
import re, sys
def load(path):
    out = {}
    for line in open(path).readlines()[1:]:
        m = re.match(r"\s*([\d.]+) excl\s+([\d.]+) incl\s+(\d+)\s+(.*)", line)
        out[m.group(4)] = (float(m.group(1)), float(m.group(2)), int(m.group(3)))
    return out
a, b, n = load(sys.argv[1]), load(sys.argv[2]), int(sys.argv[3])
rows = sorted(((v[0] - a.get(k, (0, 0, 0))[0], v[1] - a.get(k, (0, 0, 0))[1],
                v[2] - a.get(k, (0, 0, 0))[2], k) for k, v in b.items()), reverse=True)
print("ops' exclusive time per step: %.1f ms" % (sum(r[0] for r in rows) / n * 1e3))
for excl, incl, calls, name in rows[:30]:
    print("%7.2f ms excl %7.2f ms incl %6.1f calls  %s" % (excl / n * 1e3, incl / n * 1e3, calls / n, name))
PY
