#!/usr/bin/env bash
# Data-parallel against one process on this machine, interleaved: 1 process x THREADS
# threads x batch 8 against THREADS processes x 1 thread x batch 8/THREADS (the same
# global batch, c10d Gloo over loopback, started as torchrun starts them). MRPC, test
# model, STEPS optimizer steps, no evaluation during training or saves; prints train
# seconds, samples/s, final validation accuracy/F1 and the ratio.
#
#   scripts/bench_ddp.sh                 # STEPS=100 THREADS=2
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${STEPS:-100}; threads=${THREADS:-2}
data=${GLUE_MIRROR:-../shared/glue-mirror}
model=${GLUE_TEST_MODEL:-.venv/test-model}
cargo build --release -q -p glue-cli
work=$(mktemp -d /tmp/glue-rs-bench-ddp.XXXXXX)
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); MRPC, test model," \
     "global batch 8, $steps steps; logs in $work"
run() { # name, processes
  local out="$work/$1" procs=$2 port
  port=$((29600 + RANDOM % 300))
  local args=(run --task mrpc --model "$model" --data-dir "$data" --device cpu
    --max-steps "$steps" --eval-strategy no --save-strategy no
    --per-device-train-batch-size $((8 / procs)) --output-dir "$out")
  if [ "$procs" = 1 ]; then
    OMP_NUM_THREADS=$threads ./target/release/glue-cli "${args[@]}" > "$out.log" 2>&1
  else
    local pids=()
    for ((r = 0; r < procs; r++)); do
      WORLD_SIZE=$procs RANK=$r LOCAL_RANK=$r LOCAL_WORLD_SIZE=$procs MASTER_ADDR=127.0.0.1 \
        MASTER_PORT=$port OMP_NUM_THREADS=$((threads / procs)) \
        ./target/release/glue-cli "${args[@]}" > "$out-rank$r.log" 2>&1 & pids+=($!)
    done
    wait "${pids[@]}"
  fi
  python3 - "$out" "$1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1] + "/all_results.json"))
print(f"{sys.argv[2]:<28} {r['train_runtime']:>8.1f} {r['train_samples_per_second']:>10.1f}"
      f" {r['eval_accuracy']:>9.4f} {r['eval_f1']:>7.4f}")
PY
}
printf '%-28s %8s %10s %9s %7s\n' run "train s" samples/s accuracy f1
for round in 1 2; do
  run "1 process x $threads threads #$round" 1
  run "$threads processes x 1 thread #$round" "$threads"
done
