#!/usr/bin/env bash
# LoRA vs full fine-tuning with glue-cli, on this machine, interleaved (full, LoRA,
# full, LoRA): train seconds, ms per optimizer step, peak RSS, trainable weights and
# AdamW state, for the test model and for a bert-base-uncased-shaped random model
# (target/bench-train/bert-base-random, written by `cargo xtask bench-train --bert-base`).
#
#   scripts/bench_lora.sh                      # MRPC, batch 8, LoRA r 8 (query, value)
#   STEPS=60 BASE_STEPS=20 THREADS=2 scripts/bench_lora.sh
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${STEPS:-60}; base_steps=${BASE_STEPS:-20}; threads=${THREADS:-2}
data=${GLUE_MIRROR:-../shared/glue-mirror}
cargo build --release -q -p glue-cli
models=("test-model:${GLUE_TEST_MODEL:-.venv/test-model}:$steps")
base=target/bench-train/bert-base-random
if [ -f "$base/model.safetensors" ]; then
  models+=("bert-base-random:$base:$base_steps")
else
  echo "($base missing: run \`cargo xtask bench-train --bert-base --max-steps 1 --repeats 1\` once for the bert-base rows)"
fi
work=$(mktemp -d /tmp/glue-rs-bench-lora.XXXXXX)
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $threads threads; MRPC, batch 8; logs in $work"
printf '%-17s %-6s %6s %8s %9s %12s %12s\n' model mode steps "train s" ms/step "peak RSS" trainable
for entry in "${models[@]}"; do
  IFS=: read -r name path n <<< "$entry"
  for round in 1 2; do
    for mode in full lora; do
      flags=(); [ "$mode" = lora ] && flags=(--lora-r 8)
      out="$work/$name-$mode-$round"
      OMP_NUM_THREADS=$threads /usr/bin/time -f '%M' -o "$out.rss" \
        ./target/release/glue-cli run --task mrpc --model "$path" --data-dir "$data" \
        --device cpu --max-steps "$n" --per-device-train-batch-size 8 --eval-strategy no \
        --save-strategy no --output-dir "$out" "${flags[@]}" > "$out.log" 2>&1 \
        || { echo "$name $mode failed, see $out.log"; exit 1; }
      seconds=$(grep -o '"train_runtime": *[0-9.]*' "$out/all_results.json" | grep -o '[0-9.]*$')
      trainable=$(grep -o 'trainable parameters: [0-9,]* (AdamW state [0-9.]* MB)' "$out.log" \
        | sed 's/trainable parameters: //')
      printf '%-17s %-6s %6s %8.1f %9.0f %8.0f MiB %s\n' "$name" "$mode" "$n" "$seconds" \
        "$(echo "$seconds * 1000 / $n" | bc -l)" "$(echo "$(cat "$out.rss") / 1024" | bc -l)" "$trainable"
    done
  done
done
