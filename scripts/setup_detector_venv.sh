#!/usr/bin/env bash
# Optional: a separate venv (.venv-detectors) with PyTorch and ultralytics, for
# scripts/export_yolo.py (YOLOv5s / YOLOv8n exported as ultralytics users do). ultralytics needs
# torchvision, and PyPI's torchvision only loads beside the exact torch build it was made for,
# so this pins the pair (a CUDA build on x86-64: about 5.5 GB) and keeps it out of slimtvm's venv.
# The benchmark itself (benchmarks/detectors.py) runs in the main venv on the exported files.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
[ -x .venv-detectors/bin/python ] || "$PYTHON" -m venv .venv-detectors
.venv-detectors/bin/pip install -q "torch==2.14.1" "torchvision==0.29.1" "ultralytics==8.4.190" "onnx==1.23.2"
.venv-detectors/bin/python -c "import torch, ultralytics; print('torch', torch.__version__, '+ ultralytics', ultralytics.__version__, 'ready: .venv-detectors/bin/python')"
