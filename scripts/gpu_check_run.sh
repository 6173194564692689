#!/usr/bin/env bash
# Runs on the GPU machine; prints markdown tables. Keeps going past a failed step.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python=${TORCH_PYTHON:-python3}
torch_lib=${TORCH_LIB:-$("$python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')}
export LD_LIBRARY_PATH="$torch_lib:${LD_LIBRARY_PATH:-}"
out=${OUT:-/tmp/gpu-check-out}; mkdir -p "$out"   # tables here; per-run logs in one tarball
steps=${STEPS:-200}
# DEVICE=cpu STEPS=2 PRECISIONS=fp32 BATCHES=8: a dry run of this script off the GPU machine.
device=${DEVICE:-cuda}
work=$(mktemp -d)
logs="$work/logs"; mkdir -p "$logs"
# The binaries travel gzipped (the 64 MiB limit); unpack them next to nothing else.
bin="$work/bin"; mkdir -p "$bin"
for b in glue-cli gpu_check; do gunzip -c "$here/$b.gz" > "$bin/$b" && chmod +x "$bin/$b"; done
nvidia-smi -L || true
"$bin/glue-cli" --version || true
echo "## correctness"
timeout 120 "$bin/gpu_check" check "$here" 2>&1 | tee "$out/correctness.md"

# bert-base-uncased's shape with random weights, the bert-base-uncased vocabulary.
"$python" - "$work/bert-base" "$here/tokenizer" <<'PY'
import shutil, sys, torch
from transformers import BertConfig, BertForSequenceClassification
torch.manual_seed(0)
BertForSequenceClassification(BertConfig(num_labels=2)).save_pretrained(sys.argv[1])
for f in ["tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"]:
    shutil.copy(f"{sys.argv[2]}/{f}", sys.argv[1])
PY

common="--task mrpc --model $work/bert-base --data-dir $here/glue --max-steps $steps --eval-strategy no --seed 42"
echo; echo "## training, bert-base-shaped random init, MRPC, $steps steps (glue-rs, then HF Trainer)"
for bs in ${BATCHES:-8 32}; do
  for prec in ${PRECISIONS:-fp32 bf16}; do
    flag=""; [ $prec = bf16 ] && flag="--bf16"
    touch "$work/rs-$prec-$bs.started"
    timeout 150 "$bin/glue-cli" run $common --device $device --save-strategy no \
      --per-device-train-batch-size $bs --per-device-eval-batch-size $bs $flag \
      --output-dir "$work/rs-$prec-$bs" > "$logs/rs-$prec-$bs.log" 2>&1 || echo "glue-rs $prec b$bs FAILED (see log)"
    [ "${HF:-1}" = 1 ] || continue
    timeout 150 "$python" "$here/hf_train.py" $common --device $device \
      --per-device-train-batch-size $bs --per-device-eval-batch-size $bs $flag \
      --output-dir "$work/hf-$prec-$bs" > "$logs/hf-$prec-$bs.log" 2>&1 || echo "HF $prec b$bs FAILED (see log)"
  done
done
"$python" - "$work" "$steps" <<'PY' | tee "$out/training.md"
import json, sys, os
work, steps = sys.argv[1], int(sys.argv[2])
def load(name):
    p = os.path.join(work, name, "all_results.json")
    return json.load(open(p)) if os.path.exists(p) else None
print("| batch | precision | glue-rs ms/step | HF ms/step | train speed-up | glue-rs eval samples/s | HF eval samples/s | eval speed-up |")
print("|---|---|---|---|---|---|---|---|")
for bs in (8, 32):
    for prec in ("fp32", "bf16"):
        if not os.path.exists(os.path.join(work, f"rs-{prec}-{bs}.started")):
            continue
        rs, hf = load(f"rs-{prec}-{bs}"), load(f"hf-{prec}-{bs}")
        if rs and not hf:
            print(f"| {bs} | {prec} | {rs['train_runtime'] / steps * 1e3:.1f} | (not run) | | {rs['eval_samples_per_second']:.0f} | | |"); continue
        if not rs or not hf:
            print(f"| {bs} | {prec} | {'-' if not rs else ''} | {'-' if not hf else ''} | missing | | | |"); continue
        a, b = rs["train_runtime"] / steps * 1e3, hf["train_runtime"] / steps * 1e3
        ea, eb = rs["eval_samples_per_second"], hf["eval_samples_per_second"]
        print(f"| {bs} | {prec} | {a:.1f} | {b:.1f} | {b / a:.2f}x | {ea:.0f} | {eb:.0f} | {ea / eb:.2f}x |")
PY

if [ "${DIAG:-0}" = 1 ]; then
  echo; echo "## bf16 warm-up diagnosis, batch 8 (ms/step: 3x the steps; eager CUDA module loading)"
  for variant in long eager hf-long; do
    n=$((steps * 3)); env=""; [ $variant = eager ] && { n=$steps; env="CUDA_MODULE_LOADING=EAGER"; }
    if [ $variant = hf-long ]; then
      timeout 150 "$python" "$here/hf_train.py" ${common/--max-steps $steps/--max-steps $n} --device $device \
        --bf16 --output-dir "$work/diag-$variant" > "$logs/diag-$variant.log" 2>&1
    else
      timeout 150 env $env "$bin/glue-cli" run ${common/--max-steps $steps/--max-steps $n} --device $device \
        --save-strategy no --bf16 --output-dir "$work/diag-$variant" > "$logs/diag-$variant.log" 2>&1
    fi
    "$python" -c "import json,sys; r=json.load(open(sys.argv[1])); print('| $variant | $n steps | %.1f ms/step | eval %.0f samples/s |' % (r['train_runtime']/$n*1e3, r['eval_samples_per_second']))" "$work/diag-$variant/all_results.json" || echo "| $variant | failed |"
  done | tee "$out/diagnosis.md"
fi

if [ "${DDP:-1}" = 1 ]; then
  echo; echo "## data-parallel on $device, world size 1 (bert-base random, fp32, batch 8, 20 steps, --full-determinism)"
  ddp_env="WORLD_SIZE=1 RANK=0 LOCAL_RANK=0 LOCAL_WORLD_SIZE=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=29517"
  ddp_common="--task mrpc --model $work/bert-base --data-dir $here/glue --device $device --max-steps 20 --eval-strategy no --save-strategy no --full-determinism"
  timeout 100 "$bin/glue-cli" run $ddp_common --output-dir "$work/ddp-plain" > "$logs/ddp-plain.log" 2>&1 || echo "plain run FAILED (see log)"
  echo "| backend | exit | train | weights vs the plain run |"
  echo "|---|---|---|---|"
  for backend in default gloo; do
    flag=""; [ $backend = gloo ] && flag="--ddp-backend gloo"
    timeout 100 env $ddp_env "$bin/glue-cli" run $ddp_common $flag --output-dir "$work/ddp-$backend" > "$logs/ddp-$backend.log" 2>&1
    rc=$?
    same="differ"; cmp -s "$work/ddp-plain/model.safetensors" "$work/ddp-$backend/model.safetensors" && same="identical"
    echo "| $backend | $rc | $(grep -o 'train: .*samples/s' "$logs/ddp-$backend.log" | tail -n 1) | $same |"
    [ $rc = 0 ] || tail -n 2 "$logs/ddp-$backend.log"
  done
fi 2>&1 | tee "$out/ddp.md"

[ "${REPRO:-1}" = 1 ] || { tar -czf "$out/logs.tar.gz" -C "$work" logs; exit 0; }
echo; echo "## reproducibility on $device (bert-base random, fp32, batch 8, 50 steps, final weights)"
for mode in plain deterministic; do
  flag=""; [ $mode = deterministic ] && flag="--full-determinism"
  for i in 1 2; do
    timeout 100 "$bin/glue-cli" run --task mrpc --model "$work/bert-base" --data-dir "$here/glue" \
      --device $device --max-steps 50 --eval-strategy no --save-strategy no $flag \
      --output-dir "$work/det-$mode-$i" > "$logs/det-$mode-$i.log" 2>&1 || echo "$mode run $i FAILED (see log)"
  done
  if cmp -s "$work/det-$mode-1/model.safetensors" "$work/det-$mode-2/model.safetensors"; then
    echo "| $mode | two runs: identical weights |"
  else
    echo "| $mode | two runs: weights differ |"
  fi
done | tee "$out/reproducibility.md"
tar -czf "$out/logs.tar.gz" -C "$work" logs
