#!/usr/bin/env bash
# Launches the same short glue-cli training run N times and reports, per checkpoint
# step, how many distinct weight sets came out (1 = reproducible). Not a CI test: a
# rare divergence needs many launches and varied machine load to show, so runs go
# two at a time, and every third one has a busy CPU loop beside it.
#
#   scripts/determinism_stress.sh [N] [glue-cli run flags...]
#   MKL_CBWR=AUTO scripts/determinism_stress.sh 20      # a candidate switch
#   scripts/determinism_stress.sh 20 --full-determinism
#
# Env: STEPS (default 24), SAVE_EVERY (8), THREADS (2), GLUE_MIRROR, GLUE_TEST_MODEL.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-20}; shift || true
steps=${STEPS:-24}; every=${SAVE_EVERY:-8}; threads=${THREADS:-2}
data=${GLUE_MIRROR:-../shared/glue-mirror}
model=${GLUE_TEST_MODEL:-.venv/test-model}
cargo build --release -q -p glue-cli
work=$(mktemp -d /tmp/glue-rs-determinism.XXXXXX)
echo "determinism stress: $n runs of $steps steps, checkpoints every $every, $threads thread(s)," \
     "flags: ${*:-none}, MKL_CBWR=${MKL_CBWR:-unset}; in $work"
run() {
  local i=$1; shift
  OMP_NUM_THREADS=$threads ./target/release/glue-cli run --task mrpc --model "$model" \
    --data-dir "$data" --device cpu --max-steps "$steps" --save-strategy steps \
    --save-steps "$every" --eval-strategy no --logging-steps "$every" \
    --output-dir "$work/run-$i" "$@" > "$work/run-$i.log" 2>&1 \
    || { echo "run $i failed, see $work/run-$i.log"; exit 1; }
}
busy() { local end=$((SECONDS + $1)); while [ $SECONDS -lt $end ]; do :; done; }
for ((i = 0; i < n; i += 2)); do
  pids=()
  for j in $i $((i + 1)); do
    [ "$j" -lt "$n" ] || continue
    run "$j" "$@" & pids+=($!)
  done
  if (( (i / 2) % 3 == 2 )); then busy 10 & pids+=($!); fi
  wait "${pids[@]}"
done
printf '%8s %8s  %s\n' step distinct "weight sets (sha256 of model.safetensors: runs)"
for ((s = every; s <= steps; s += every)); do
  sums=$(for ((j = 0; j < n; j++)); do
    sha256sum "$work/run-$j/checkpoint-$s/model.safetensors" | cut -c1-12
  done | sort | uniq -c | awk '{printf "%s:%s ", $2, $1}')
  printf '%8s %8s  %s\n' "$s" "$(echo "$sums" | wc -w)" "$sums"
done
