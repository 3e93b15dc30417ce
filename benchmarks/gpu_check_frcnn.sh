#!/usr/bin/env bash
# GPU check of Faster R-CNN (learning from scratch on 12,000 images, timed) and of every model through
# Ray Tune on one GPU: source .gpu/install.sh && bash benchmarks/gpu_check_frcnn.sh (see gpu_session.sh)
set -uo pipefail
out=${OUT:-gpu-out}; mkdir -p "$out"
s=$SECONDS
timeout 135 python3 -m trainables.train --model faster_rcnn --no-pretrained --epochs 2 --limit 12000 --set batch_size=64 > "$out/frcnn.log" 2>&1
echo "== frcnn exit $? in $((SECONDS-s)) s"; grep -v Warning "$out/frcnn.log" | tail -6
s=$SECONDS
timeout 150 python3 -m search.run --model all --gpus 1 --smoke --no-pretrained --no-dashboard --storage-path "$out/results" --name smoke-all --verbose 1 > "$out/smoke.log" 2>&1
echo "== smoke exit $? in $((SECONDS-s)) s"; grep -v "logging.cc\|^\s*@\|PC: @" "$out/smoke.log" | grep -A12 "^model " | head -30
python3 -c "
import pandas as pd
t=pd.read_parquet('$out/results/smoke-all/trials.parquet'); print(t[['model','status','best_val_acc','device','node','precision','train_time_s']].to_string())
e=pd.read_parquet('$out/results/smoke-all/epochs.parquet'); print(e[e.model=='faster_rcnn'][['epoch','val_acc','no_box_rate','epoch_time_s']].to_string())
" 2>&1 | tail -20
