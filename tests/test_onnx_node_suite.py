"""ONNX's backend node tests (onnx 1.16.2): every case plain TVM 0.27 compiles and matches, slimtvm
must compile and match too (scripts/onnx_node_suite.py; tests/onnx_node_tests.py fetches them).

The default suite runs every 4th case of the operators CNNs are made of and of those that once
failed here (scatter, cosh, slices with input bounds, data-dependent output shapes); ``-m slow`` all
1,282."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts", "onnx_node_suite.py")
CNN_OPERATORS = (
    "conv,batchnorm,maxpool,averagepool,gemm,matmul,relu,sign,flatten,concat,clip,softmax,nonmaxsuppression,scatter,cosh,sinh,nonzero,compress,unique"
)


def _suite(*arguments) -> str:
    proc = subprocess.run([sys.executable, SCRIPT, *arguments], capture_output=True, text=True, timeout=3000)
    assert proc.returncode == 0 and "| ONNX node tests" in proc.stdout, proc.stdout[-4000:] + proc.stderr[-2000:]  # exit 1: a case lost
    return proc.stdout


def test_a_sample_of_the_onnx_node_tests_matches_wherever_plain_tvm_does():
    out = _suite("--filter", CNN_OPERATORS, "--every", "4")
    row = next(line for line in out.splitlines() if line.startswith(f"| {CNN_OPERATORS} (every 4th) |"))
    cases, plain, ours, lost = (int(cell) for cell in row.split("|")[2:6])
    assert cases >= 50 and plain >= 35 and lost == 0 and ours >= plain, row


@pytest.mark.slow
def test_every_onnx_node_test_matches_wherever_plain_tvm_does():
    out = _suite()
    assert "| all | 1282 | " in out, out[-2000:]
