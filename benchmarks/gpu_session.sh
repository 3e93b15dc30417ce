#!/usr/bin/env bash
# One short GPU check, run on a lent GPU machine (see README "GPU checks"):
#   bash ../shared/gpu/prepare.sh            # here, once: builds the ignored .gpu/ kit
#   device run, carrying .gpu:  source .gpu/install.sh && bash benchmarks/gpu_session.sh
# Each step has its own time limit so that one slow step cannot eat the others' results.
# Logs and Parquet files go to $OUT (default ./gpu-out).
set -uo pipefail
out=${OUT:-gpu-out}
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
# 1. training cost per epoch of every model (fp32 and bf16), default settings, batch 128
step epoch_cost 90 python3 benchmarks/epoch_cost.py --device cuda --steps 10 --out "$out/epoch_cost_gpu.json"
# 2. Faster R-CNN's default configuration from scratch on all of MNIST, then the test split once
step frcnn_train 170 python3 -m trainables.train --model faster_rcnn --no-pretrained --epochs 2 --test
# 3. every model through Ray Tune on the GPU (fractional GPUs, device recorded)
step smoke_all 150 python3 -m search.run --model all --gpus 1 --smoke --no-pretrained --no-dashboard \
  --storage-path "$out/results" --name smoke-all --verbose 0
# 4. a real CNN search: 8 trials packed four to a GPU
step cnn_search 110 python3 -m search.run --model cnn --gpus 1 --num-samples 8 --max-epochs 3 --no-dashboard \
  --storage-path "$out/results" --name cnn-search --verbose 0
python3 - "$out/results" <<'EOF'
import sys, pathlib, pandas as pd
for folder in sorted(pathlib.Path(sys.argv[1]).glob("*")):
    for name in ("trials", "finalists"):
        path = folder / f"{name}.parquet"
        if path.exists():
            t = pd.read_parquet(path)
            cols = [c for c in ("model", "status", "best_val_acc", "test_acc", "train_time_s", "device", "precision") if c in t]
            print(f"--- {folder.name}/{name}\n{t[cols].to_string()}")
EOF
