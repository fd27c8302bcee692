#!/usr/bin/env bash
# The main job on the bundled example: install, compile the digits CNN for this machine, run it on
# a test image, check all 450 test images against onnxruntime, and time it next to onnxruntime.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap_venv.sh bench
mkdir -p out
set -x
.venv/bin/slimtvm inspect examples/digits_cnn.onnx
.venv/bin/slimtvm compile examples/digits_cnn.onnx -o out/digits_cnn.so
.venv/bin/slimtvm run out/digits_cnn.so --input examples/digit_sample.npz --output out/digit_sample_outputs.npz
.venv/bin/python examples/evaluate_digits.py out/digits_cnn.so examples/digits_cnn.onnx
.venv/bin/slimtvm bench out/digits_cnn.so --vs-onnxruntime examples/digits_cnn.onnx --threads 1
# the binarized digits network: binary layers recognised, same predictions, timed next to onnxruntime
.venv/bin/slimtvm compile examples/digits_bnn.onnx -o out/digits_bnn.so
.venv/bin/python examples/evaluate_digits.py out/digits_bnn.so examples/digits_bnn.onnx --sign-flips-allowed
.venv/bin/slimtvm bench out/digits_bnn.so --vs-onnxruntime examples/digits_bnn.onnx --threads 1
