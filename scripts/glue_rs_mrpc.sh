#!/usr/bin/env bash
# glue-cli's side of the MRPC parity check: the seed workflow (3 epochs, batch 8,
# lr 5e-5, eval every epoch) on the test model, CPU, for each seed; prints
# validation accuracy/F1, train time and samples/s. Compare with
# scripts/hf_trainer_mrpc.py (HF Trainer, same model, data and settings).
#   scripts/glue_rs_mrpc.sh [SEED ...]     (default 42 43 44)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p glue-cli
data=${GLUE_DATA:-../shared/glue-mirror}
model=${GLUE_TEST_MODEL:-.venv/test-model}
seeds=("$@"); [ ${#seeds[@]} -gt 0 ] || seeds=(42 43 44)
printf '%5s %9s %7s %8s %10s\n' seed accuracy f1 "train s" samples/s
for seed in "${seeds[@]}"; do
  out=/tmp/glue-rs-mrpc-$seed
  rm -rf "$out"
  ./target/release/glue-cli run --task mrpc --model "$model" --data-dir "$data" --device cpu \
    --seed "$seed" --output-dir "$out" --save-strategy no > "$out.log" 2>&1
  python3 - "$out" "$seed" <<'PY'
import json, sys
r = json.load(open(sys.argv[1] + "/all_results.json"))
print(f"{sys.argv[2]:>5} {r['eval_accuracy']:>9.4f} {r['eval_f1']:>7.4f} {r['train_runtime']:>8.1f} {r['train_samples_per_second']:>10.2f}")
PY
done
