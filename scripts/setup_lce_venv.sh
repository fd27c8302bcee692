#!/usr/bin/env bash
# Optional: a separate venv (.venv-lce) with Larq Compute Engine 0.16 + TensorFlow 2.16 and TVM's
# runtime, for benchmarks/lce_comparison.py (LCE and a slimtvm library side by side in one process).
# TensorFlow 2.16 needs numpy < 2, so this cannot share slimtvm's main venv. About 1.5 GB.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
[ -x .venv-lce/bin/python ] || "$PYTHON" -m venv .venv-lce
.venv-lce/bin/pip install -q "tensorflow==2.16.2" "tf-keras==2.16.0" "larq==0.14.0" "larq-zoo==2.4.0" "larq-compute-engine==0.16.0" "tf2onnx==1.16.1" "onnx==1.16.2"
# slimtvm's runtime only (no compiler dependencies): TVM's Python package without its numpy>=2 pins
.venv-lce/bin/pip install -q --no-deps "apache-tvm==0.27.0.post1" "apache-tvm-ffi==0.1.14.post1"
.venv-lce/bin/python -c "import larq_compute_engine, tvm; print('LCE', larq_compute_engine.__version__, '+ TVM runtime ready: .venv-lce/bin/python')"
