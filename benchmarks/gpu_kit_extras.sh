#!/usr/bin/env bash
# Adds to the .gpu/ kit (bash ../shared/gpu/prepare.sh first) the wheel the winners' bundles need on the GPU
# machine (Python 3.12, no network): safetensors, about 0.5 MB. ONNX export needs onnx, onnxscript and
# onnxruntime (about 40 MB), more than the device's 64 MiB of working tree leaves beside the kit: bundles made
# there record "no ONNX" with the reason, and their weights and cost to run are complete.
set -euo pipefail
[ -d .gpu/wheels ] || { echo "run bash ../shared/gpu/prepare.sh from the project's root first" >&2; exit 2; }
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .gpu/wheels safetensors
du -sh .gpu
