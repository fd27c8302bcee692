"""ReActNet-style blocks exported from PyTorch (tests/data/reactnet_blocks.onnx, written by
scripts/export_reactnet_block.py): RSign ``sign(x + b_c)``, mean-magnitude-scaled binary weights
computed in the graph, BN, residual, RPReLU. Both binary convs must be lowered, and the outputs
match onnxruntime (only sign flips at rounding distance of 0 allowed)."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from conftest import onnxruntime_outputs, x86_kernel_presets

import slimtvm
from slimtvm.compiler.sign_flips import compare_with_sign_flips, with_sign_inputs_as_outputs

MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "reactnet_blocks.onnx")


@pytest.mark.parametrize("target", x86_kernel_presets() or ["host"])
def test_reactnet_blocks_are_binary_and_exact(tmp_path, target):
    probe, sign_inputs = with_sign_inputs_as_outputs(onnx.load(MODEL))
    probe_runner = slimtvm.compile(probe, str(tmp_path / "probe.so"), target=target).load()
    artifact = slimtvm.compile(MODEL, str(tmp_path / "model.so"), target=target)
    passes = {p["name"]: p for p in artifact.manifest["passes"]}
    assert passes["binarize"]["binary_convs"] == passes["binary_blocks"]["binary_convs_lowered"] == 2, passes
    assert all("RSign" in layer["plan"] for layer in artifact.manifest["layers"] if layer["kernel"] == "binary_conv2d")
    runner, near = artifact.load(), 0
    for seed in range(10):
        inputs = {"image": np.random.default_rng(seed).standard_normal((1, 3, 16, 16)).astype(np.float32)}
        reference = onnxruntime_outputs(probe, inputs)
        for ours in (probe_runner.run(inputs), runner.run(inputs)):
            comparison = compare_with_sign_flips(ours, reference, sign_inputs, ["logits"])
            assert comparison.agrees(1e-4), (seed, comparison)
        near += comparison.near_zero > 0
    assert near <= 5, f"{near} of 10 inputs had pre-Sign values at rounding distance of 0"
