#!/usr/bin/env bash
# Re-runs the bad-input and fault probes of the hardening issue (#8) against glue-cli
# and prints one table row per probe: exit code, stderr's first error line, and what
# the probe checks besides (leftover temp files, the previous checkpoint intact, ...).
# Not a CI test (each probe is also covered by a test); this is the table a reviewer
# reruns by hand:
#
#   scripts/hardening_probes.sh            # debug build; GLUE_MIRROR, GLUE_TEST_MODEL as in tests
#
# Needs `cargo xtask setup --reference` (the test model; .venv-ref's python writes the
# damaged data and model files).
set -uo pipefail
cd "$(dirname "$0")/.."
data=$(realpath "${GLUE_MIRROR:-../shared/glue-mirror}")
model=$(realpath "${GLUE_TEST_MODEL:-.venv/test-model}")
py=.venv-ref/bin/python
cargo build -q -p glue-cli || exit 1
cli=$(realpath target/debug/glue-cli)
work=$(mktemp -d /tmp/glue-rs-probes.XXXXXX)
trap 'rm -rf "$work"' EXIT
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} HF_ENDPOINT=http://127.0.0.1:9 # no hub
# Flags every run shares; probes add what they vary.
base=(--device cpu --per-device-eval-batch-size 64 --logging-steps 1000)
small=("${base[@]}" --per-device-train-batch-size 4 --max-seq-length 48)
quiet=(--eval-strategy no --save-strategy no)
n=0

# probe NAME EXPECTED_EXIT EXTRA_CHECK -- glue-cli args...
# EXTRA_CHECK is a shell snippet printing a short verdict ("" = nothing to add).
probe() {
  local name=$1 want=$2 check=$3; shift 4
  n=$((n + 1))
  (cd "$work" && trap '' XFSZ && ulimit -f "${FSIZE:-unlimited}" && "$cli" "$@" \
    > "$work/out.txt" 2> "$work/err.txt")
  local rc=$? first extra
  first=$(grep -m1 -E '^(error|warning)' "$work/err.txt" | cut -c1-170)
  [ -n "$first" ] || first=$(head -c 170 "$work/err.txt" | head -1)
  extra=$(eval "$check")
  local lines verdict=ok
  lines=$(grep -c -E '^(error|thread|panicked|  [0-9]+:)' "$work/err.txt")
  [ "$rc" = "$want" ] || verdict="FAIL (want exit $want)"
  if [ "$rc" = 2 ] && [ "$lines" != 1 ]; then verdict="FAIL ($lines error lines)"; fi
  if grep -q -E 'panicked|RUST_BACKTRACE|frame #' "$work/err.txt"; then verdict="FAIL (panic)"; fi
  # A cause said twice ("X: Y: Y").
  if echo "$first" | awk -F': ' '{for(i=1;i<NF;i++)for(j=i+1;j<=NF;j++)if($i==$j&&length($i)>8)d=1} END{exit !d}'; then
    verdict="FAIL (repeats itself)"
  fi
  printf '| %d | %s | %s | `%s` | %s |\n' "$n" "$name" "$rc $verdict" "${first//|/\\|}" "$extra"
}
temps() { # temp files left under $1
  local t; t=$(find "$1" -name '*.tmp-*' -o -name '.tmp*' 2> /dev/null | wc -l); echo "temp files left: $t"
}

echo "glue-cli $("$cli" --version | head -1); probes in $work"
echo
echo '| # | probe | exit | stderr | also checked |'
echo '|---|---|---|---|---|'

# A small fine-tuned model for evaluate/predict, and a checkpoint to resume from.
"$cli" run --task rte --model "$model" --data-dir "$data" "${small[@]}" --max-steps 2 \
  --eval-strategy no --save-strategy steps --save-steps 1 --output-dir "$work/trained" > /dev/null 2>&1 \
  || { echo "setup run failed"; exit 1; }

# Sequence length above the model's 512 positions, long RTE inputs.
probe "run --max-seq-length 600" 0 'echo "trained: $(test -f "$work/long/model.safetensors" && echo yes || echo no)"' -- \
  run --task rte --model "$model" --data-dir "$data" "${base[@]}" "${quiet[@]}" \
  --per-device-train-batch-size 4 --max-seq-length 600 --max-steps 1 --output-dir "$work/long"
probe "evaluate --max-seq-length 600" 0 'grep -o "eval_accuracy[^,]*" "$work/out.txt" | head -1' -- \
  evaluate --task rte --model "$work/trained" --data-dir "$data" --device cpu --max-seq-length 600
probe "predict --max-seq-length 600" 0 'echo "rows: $(($(wc -l < "$work/pred/RTE.tsv") - 1))"' -- \
  predict --task rte --model "$work/trained" --data-dir "$data" --device cpu \
  --max-seq-length 600 --output-dir "$work/pred"

# A model whose embedding matrix is smaller than its tokenizer's vocabulary.
cp -r "$work/trained" "$work/small-vocab"
"$py" - "$work/small-vocab" <<'EOF'
import json, sys
from safetensors.numpy import load_file, save_file
d = sys.argv[1]
w = load_file(f"{d}/model.safetensors")
w["bert.embeddings.word_embeddings.weight"] = w["bert.embeddings.word_embeddings.weight"][:1000]
save_file(w, f"{d}/model.safetensors")
c = json.load(open(f"{d}/config.json")); c["vocab_size"] = 1000
json.dump(c, open(f"{d}/config.json", "w"))
EOF
probe "embedding rows < tokenizer vocabulary (evaluate)" 2 '' -- \
  evaluate --task rte --model "$work/small-vocab" --data-dir "$data" --device cpu
probe "embedding rows < tokenizer vocabulary (run)" 2 '' -- \
  run --task rte --model "$work/small-vocab" --data-dir "$data" "${small[@]}" "${quiet[@]}" \
  --output-dir "$work/sv"

# Two runs into one output folder.
"$cli" run --task rte --model "$model" --data-dir "$data" "${small[@]}" --max-steps 40 \
  --eval-strategy no --save-strategy steps --save-steps 20 --output-dir "$work/shared-out" \
  > "$work/first.log" 2>&1 &
first=$!
for _ in $(seq 100); do [ -f "$work/shared-out/.glue-rs.lock" ] && break; sleep 0.1; done
probe "second run into a busy --output-dir" 2 '' -- \
  run --task rte --model "$model" --data-dir "$data" "${small[@]}" "${quiet[@]}" --max-steps 40 \
  --output-dir "$work/shared-out"
wait "$first"; echo "| | (first run) | $? | | $(temps "$work/shared-out") |"

for flag in "--learning-rate NaN" "--learning-rate inf" "--adam-beta1 1.5" "--adam-epsilon -1e-8" \
  "--pad-to-multiple-of 0" "--early-stopping-patience 0" "--metric-for-best-model accurcy"; do
  # shellcheck disable=SC2086
  probe "run $flag" 2 '' -- run --task rte --model "$model" --data-dir "$data" "${small[@]}" \
    --eval-strategy epoch --save-strategy no $flag --output-dir "$work/flags"
done
probe "evaluate --batch-size 0" 2 '' -- \
  evaluate --task rte --model "$work/trained" --data-dir "$data" --device cpu --batch-size 0

# Resume with settings that break exact resume; then accepted knowingly.
probe "resume with another batch size" 2 '' -- \
  run --task rte --model "$model" --data-dir "$data" "${base[@]}" --max-seq-length 48 --max-steps 2 \
  --eval-strategy no --save-strategy steps --save-steps 1 --per-device-train-batch-size 8 \
  --output-dir "$work/trained" --resume-from-checkpoint
probe "resume with another seed, --resume-with-changed-args" 0 \
  'grep -c "TRAIN this model" "$work/err.txt" | sed "s/^/newly-initialized notes: /"' -- \
  run --task rte --model "$model" --data-dir "$data" "${small[@]}" --max-steps 3 \
  --eval-strategy no --save-strategy steps --save-steps 1 --seed 7 --resume-with-changed-args \
  --output-dir "$work/trained" --resume-from-checkpoint

# Model folders with weights missing, or no config.json.
for key in classifier.weight bert.encoder.layer.0.attention.self.query.weight; do
  rm -rf "$work/missing"; cp -r "$work/trained" "$work/missing"
  "$py" - "$work/missing" "$key" <<'EOF'
import sys
from safetensors.numpy import load_file, save_file
w = load_file(f"{sys.argv[1]}/model.safetensors"); del w[sys.argv[2]]
save_file(w, f"{sys.argv[1]}/model.safetensors")
EOF
  probe "evaluate, model without $key" 2 '' -- \
    evaluate --task rte --model "$work/missing" --data-dir "$data" --device cpu
done
mkdir -p "$work/no-config"; cp "$model/model.safetensors" "$model/tokenizer.json" "$work/no-config/"
probe "local folder without config.json" 2 '' -- \
  evaluate --task rte --model "$work/no-config" --data-dir "$data" --device cpu

# Damaged labels: NaN and out-of-range STS-B scores, NaN in a class task.
for case in stsb-nan stsb-7.5 rte-nan; do
  task=${case%%-*}; rm -rf "$work/bad-data"; mkdir -p "$work/bad-data"
  cp -r "$data/$task" "$work/bad-data/"
  "$py" - "$work/bad-data/$task/train-00000-of-00001.parquet" "$case" <<'EOF'
import sys, pyarrow as pa, pyarrow.parquet as pq
path, case = sys.argv[1:]
t = pq.read_table(path)
labels = t.column("label").to_pylist()
labels[3] = 7.5 if case.endswith("7.5") else float("nan")
kind = pa.float32() if case.startswith("stsb") else pa.float64()
t = t.set_column(t.schema.get_field_index("label"), "label", pa.array(labels, kind))
pq.write_table(t, path)
EOF
  probe "$case label in train" 2 'echo "model loaded first: $(grep -c -i "newly initialized" "$work/err.txt")"' -- \
    run --task "$task" --model "$model" --data-dir "$work/bad-data" "${small[@]}" "${quiet[@]}" \
    --output-dir "$work/bad-out"
done

# Output folder that cannot be written; data missing for a hub model (no download).
probe "read-only --output-dir (/sys)" 2 'echo "model loaded first: $(grep -c -i "newly initialized" "$work/err.txt")"' -- \
  run --task rte --model "$model" --data-dir "$data" "${small[@]}" "${quiet[@]}" \
  --output-dir /sys/glue-rs-probe
probe "missing data, hub model id" 2 '' -- \
  run --task rte --model bert-base-uncased --data-dir "$work/nowhere" "${small[@]}" "${quiet[@]}" \
  --output-dir "$work/nd"

# Disk full during the final save (file-size limit: the 90 MB model.safetensors write fails).
rm -rf "$work/full"; mkdir -p "$work/full"
FSIZE=20000 probe "file too large (20 MB limit) during the final save" 2 \
  'echo "$(temps "$work/full"); files left: $(ls -A "$work/full" | wc -l)"' -- \
  run --task rte --model "$model" --data-dir "$data" "${small[@]}" "${quiet[@]}" --max-steps 1 \
  --output-dir "$work/full"

# tokenize --output onto an existing folder; a config key of the wrong type.
mkdir -p "$work/tok-out"
probe "tokenize --output <existing folder>" 2 'temps "$work"' -- \
  tokenize --task rte --data-dir "$data" --split validation --all --tokenizer "$model" \
  --output "$work/tok-out"
printf 'learning_rate = "fast"\n' > "$work/bad.toml"
probe "--config with learning_rate = \"fast\"" 2 '' -- \
  run --task rte --model "$model" --data-dir "$data" --config "$work/bad.toml" --output-dir "$work/cfg"
