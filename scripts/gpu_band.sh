#!/usr/bin/env bash
# The test model's full MRPC run on a lent GPU: glue-rs --bf16 over seeds 42-44 next to
# HF Trainer fp32 (the band) and bf16, and the bert-base-shaped bf16 warm-up with and
# without cuDNN attention. Two halves:
#   bash scripts/gpu_band.sh pack target/gpu-band   # here: needs target/release/glue-cli-torch, .venv-ref
#   bash target/gpu-band/gpu_band.sh run            # there: prints markdown tables into $OUT
# The test model's 87 MiB of fp32 weights cannot travel (64 MiB in all), so they travel
# as fp16 (relative rounding <= 4.9e-4) and are widened back to fp32 there; every run
# below starts from that same widened copy, HF's band included.
set -uo pipefail
mode=${1:?pack DIR | run}
here="$(cd "$(dirname "$0")" && pwd)"

if [ "$mode" = pack ]; then
  dir=${2:?pack needs a folder}
  root="$(cd "$here/.." && pwd)"
  rm -rf "$dir"; mkdir -p "$dir/glue/mrpc" "$dir/tokenizer" "$dir/model16"
  cp "$root/target/release/glue-cli-torch" "$dir/glue-cli" && strip "$dir/glue-cli" && gzip -9 "$dir/glue-cli"
  for s in train validation; do
    cp "${GLUE_MIRROR:-$root/../shared/glue-mirror}/mrpc/$s-00000-of-00001.parquet" "$dir/glue/mrpc/"
  done
  for f in config.json tokenizer.json tokenizer_config.json vocab.txt special_tokens_map.json; do
    cp "$root/.venv/test-model/$f" "$dir/model16/"
    [ "$f" = config.json ] || cp "$root/.venv/test-model/$f" "$dir/tokenizer/"
  done
  "$root/.venv-ref/bin/python" - "$root/.venv/test-model/model.safetensors" "$dir/model16/model.fp16.safetensors" <<'PY'
import sys
from safetensors.torch import load_file, save_file
save_file({k: v.half().contiguous() for k, v in load_file(sys.argv[1]).items()}, sys.argv[2])
PY
  cp "$root/scripts/hf_train.py" "$dir/"; cp "$0" "$dir/gpu_band.sh"
  du -sh "$dir"
  exit 0
fi

python=${TORCH_PYTHON:-python3}
# DRY=1: a two-step run of every line on the CPU, to check this script off the GPU machine.
device=cuda; short=""; steps=150
bb=bert-base
[ "${DRY:-0}" = 1 ] && { device=cpu; short="--max-steps 2"; steps=2; bb=test-model; }
torch_lib=$("$python" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$torch_lib:${LD_LIBRARY_PATH:-}"
out=${OUT:-/tmp/gpu-band-out}; mkdir -p "$out"
work=$(mktemp -d); logs="$work/logs"; mkdir -p "$logs"
gunzip -c "$here/glue-cli.gz" > "$work/glue-cli" && chmod +x "$work/glue-cli"
nvidia-smi -L || true
"$python" - "$here/model16" "$work/test-model" "$work/bert-base" "$here/tokenizer" <<'PY'
import os, shutil, sys, torch
from safetensors.torch import load_file, save_file
from transformers import BertConfig, BertForSequenceClassification
src, dst, base, tok = sys.argv[1:]
os.makedirs(dst)
save_file({k: v.float().contiguous() for k, v in load_file(f"{src}/model.fp16.safetensors").items()},
          f"{dst}/model.safetensors", metadata={"format": "pt"})
for f in os.listdir(src):
    if not f.startswith("model."):
        shutil.copy(f"{src}/{f}", dst)
torch.manual_seed(0)
BertForSequenceClassification(BertConfig(num_labels=2)).save_pretrained(base)
for f in os.listdir(tok):
    shutil.copy(f"{tok}/{f}", base)
PY

# name, side (rs|hf), model, extra flags, timeout
one() {
  local name=$1 side=$2 model=$3 flags=$4 limit=$5
  if [ $side = rs ]; then
    timeout $limit env ${ENVS:-} "$work/glue-cli" run --task mrpc --model "$model" --data-dir "$here/glue" \
      --device $device --save-strategy no --output-dir "$work/$name" $flags > "$logs/$name.log" 2>&1
  else
    timeout $limit "$python" "$here/hf_train.py" --task mrpc --model "$model" --data-dir "$here/glue" \
      --device $device --output-dir "$work/$name" $flags > "$logs/$name.log" 2>&1
  fi || echo "$name FAILED or timed out (see logs)"
}
row() {  # name, label, steps-or-empty
  "$python" - "$work/$1/all_results.json" "$2" "${3:-}" <<'PY' || echo "| $2 | missing |"
import json, sys
r = json.load(open(sys.argv[1])); steps = sys.argv[3]
step = f"{r['train_runtime'] / int(steps) * 1e3:.1f} ms/step" if steps else f"{r['train_runtime']:.1f} s"
acc = f"{r['eval_accuracy']:.4f} / {r['eval_f1']:.4f}" if 'eval_accuracy' in r else ""
print(f"| {sys.argv[2]} | {step} | {r['eval_samples_per_second']:.0f} | {acc} |")
PY
}

echo "## test model (all-MiniLM-L6-v2 via fp16), MRPC, 3 epochs, batch 8, eval per epoch" | tee "$out/band.md"
echo "| run | train | eval samples/s | accuracy / F1 |" | tee -a "$out/band.md"
echo "|---|---|---|---|" | tee -a "$out/band.md"
for seed in 42 43 44; do
  one rs-bf16-$seed rs "$work/test-model" "$short --bf16 --seed $seed" 120; row rs-bf16-$seed "glue-rs bf16 seed $seed" | tee -a "$out/band.md"
  one hf-fp32-$seed hf "$work/test-model" "$short --seed $seed" 150; row hf-fp32-$seed "HF fp32 seed $seed" | tee -a "$out/band.md"
done
one rs-fp32-42 rs "$work/test-model" "$short --seed 42" 120; row rs-fp32-42 "glue-rs fp32 seed 42" | tee -a "$out/band.md"
one hf-bf16-42 hf "$work/test-model" "$short --seed 42 --bf16" 150; row hf-bf16-42 "HF bf16 seed 42" | tee -a "$out/band.md"

base="--max-steps $steps --eval-strategy no --seed 42"
echo; echo "## bert-base-shaped random init, MRPC lengths, $steps steps" | tee "$out/bert-base.md"
echo "| run | train | eval samples/s | |" | tee -a "$out/bert-base.md"
echo "|---|---|---|---|" | tee -a "$out/bert-base.md"
for bs in 8 32; do
  b="--per-device-train-batch-size $bs --per-device-eval-batch-size $bs"
  one bb-rs-bf16-$bs rs "$work/$bb" "$base $b --bf16" 90; row bb-rs-bf16-$bs "glue-rs bf16 b$bs" $steps | tee -a "$out/bert-base.md"
  ENVS=GLUE_RS_CUDNN_ATTENTION=1 one bb-rs-bf16cudnn-$bs rs "$work/$bb" "$base $b --bf16" 90
  row bb-rs-bf16cudnn-$bs "glue-rs bf16 b$bs, cuDNN attention kept" $steps | tee -a "$out/bert-base.md"
  one bb-hf-bf16-$bs hf "$work/$bb" "$base $b --bf16" 120; row bb-hf-bf16-$bs "HF bf16 b$bs" $steps | tee -a "$out/bert-base.md"
  [ $bs = 8 ] || continue  # fp32 at batch 32: docs/gpu-check-h200.md
  one bb-rs-fp32-$bs rs "$work/$bb" "$base $b" 90; row bb-rs-fp32-$bs "glue-rs fp32 b$bs" $steps | tee -a "$out/bert-base.md"
  one bb-hf-fp32-$bs hf "$work/$bb" "$base $b" 120; row bb-hf-fp32-$bs "HF fp32 b$bs" $steps | tee -a "$out/bert-base.md"
done
tar -czf "$out/logs.tar.gz" -C "$work" logs
