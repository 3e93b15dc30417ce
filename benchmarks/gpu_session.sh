#!/usr/bin/env bash
# One short GPU check, run on a lent GPU machine (see README "GPU checks"):
#   bash ../shared/gpu/prepare.sh            # here, once: builds the ignored .gpu/ kit
#   device run, carrying .gpu:  source .gpu/install.sh && bash benchmarks/gpu_session.sh [efficiency|repeats]
# Each step has its own time limit so that one slow step cannot eat the others' results; each part
# fits in one device call (under 10 minutes), so run one part per session.
#   efficiency: issue 12's targets (trials at once, slot share, GPU busy) and the MPS comparison
#   repeats:    issue 15's targets: the CNN and ViT searches at their GPU budgets with --repeats 3
#   owed:       what no lent GPU has measured yet, in one call (about 9 minutes): the CNN packing figures
#               (trials at once, slot share, GPU busy), every model's smoke search packed on one GPU, and the
#               CNN's GPU budget with --repeats 3 (goal: 99.6% test accuracy)
#   bundles:    the winners' bundles and their cost to run on the GPU (needs safetensors in the kit:
#               bash benchmarks/gpu_kit_extras.sh after prepare.sh; onnx and onnxruntime do not fit in the
#               64 MiB the device takes, so the GPU's bundles say "no ONNX" and why)
# Logs, JSON figures and the key Parquet files go to $OUT (default ./gpu-out); the searches' own folders go to a
# scratch folder, since the device returns at most 8 files from $OUT.
set -uo pipefail
out=${OUT:-gpu-out}
scratch=$(mktemp -d /tmp/gpu-session-XXXX)
mkdir -p "$out"
step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  echo "== $name: exit $? in $((SECONDS - start)) s"
  tail -n 25 "$out/$name.log"
}
nvidia-smi -L
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
part=${1:-efficiency}
if [ "$part" = owed ]; then
  step eff_cnn16 110 python3 benchmarks/search_efficiency.py --out "$out/eff_cnn16.json" -- \
    --model cnn --gpus 1 --num-samples 16 --max-epochs 6
  step eff_smoke_all 140 python3 benchmarks/search_efficiency.py --out "$out/eff_smoke_all.json" -- \
    --model all --gpus 1 --smoke --no-pretrained
  step repeats_cnn 270 python3 -m search.run --model cnn --gpus 1 --repeats 3 --no-dashboard --verbose 1 \
    --storage-path "$scratch" --name cnn-gpu-repeats
  for f in finalists trials; do cp "$scratch/cnn-gpu-repeats/$f.parquet" "$out/repeats_cnn_$f.parquet" 2>/dev/null; done
  exit 0
fi
if [ "$part" = bundles ]; then
  # Goals: every winner bundled; cost_ columns measured on cuda (latency at batch 1, throughput at 256).
  step bundles_smoke 240 python3 -m search.run --model cnn,vit,resnet18 --gpus 1 --smoke --no-pretrained \
    --no-dashboard --verbose 1 --storage-path "$out" --name bundles-gpu
  step bundles_costs 60 python3 -c "import pandas as pd; f = pd.read_parquet('$out/bundles-gpu/finalists.parquet'); \
print(f.filter(regex='^(model|test_acc|bundle_error|onnx_reason|cost_)').to_string())"
  exit 0
fi
if [ "$part" = repeats ]; then
  # Goals: CNN >= 99.6%, ViT >= 99.3% test accuracy (mean of the repeats), each search well under 10 minutes.
  step repeats_cnn 270 python3 -m search.run --model cnn --gpus 1 --repeats 3 --no-dashboard --verbose 0 \
    --storage-path "$out" --name cnn-gpu-repeats
  step repeats_vit 300 python3 -m search.run --model vit --gpus 1 --repeats 3 --no-dashboard --verbose 0 \
    --storage-path "$out" --name vit-gpu-repeats
  exit 0
fi
# 1. the issue-12 targets: whole command, trials at once, slot-time share, GPU busy (nvidia-smi every 0.5 s)
step eff_cnn16 120 python3 benchmarks/search_efficiency.py -- \
  --model cnn --gpus 1 --num-samples 16 --max-epochs 6
step eff_smoke_all 150 python3 benchmarks/search_efficiency.py -- \
  --model all --gpus 1 --smoke --no-pretrained
step eff_vit8 160 python3 benchmarks/search_efficiency.py -- --model vit --gpus 1 --num-samples 8 --max-epochs 15
# 2. the same CNN search with NVIDIA MPS on: do four trial processes sharing the GPU gain from it?
if command -v nvidia-cuda-mps-control > /dev/null; then
  nvidia-cuda-mps-control -d && step eff_cnn16_mps 120 python3 benchmarks/search_efficiency.py \
    -- --model cnn --gpus 1 --num-samples 16 --max-epochs 6
  echo quit | nvidia-cuda-mps-control
else
  echo "== MPS: nvidia-cuda-mps-control not found"
fi
