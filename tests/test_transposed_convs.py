"""Transposed convs (ONNX ConvTranspose: UNet and decoder up-convs) run as one conv on the input
and a depth-to-space (lowering/transposed_convs.py), on slimtvm's conv kernels: before, TVM's
``conv2d_transpose`` ran on the generic schedule (a 2×2/2 up-conv of 64 channels at 56×56, 68×
onnxruntime's time). Outputs as onnxruntime's for strides 1–4, kernels 1–5, padding and output
padding, non-square kernels and strides."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_outputs_match, onnxruntime_outputs, x86_kernel_presets
from onnx_builders import GraphBuilder

import slimtvm

# (kernel, strides, pads [top, left, bottom, right], output_padding)
CONFIGS = [
    ((2, 2), (2, 2), (0, 0, 0, 0), (0, 0)),  # UNet's up-conv: a 1×1 conv, no extra work
    ((4, 4), (2, 2), (1, 1, 1, 1), (0, 0)),  # DCGAN / FCN
    ((3, 3), (2, 2), (1, 1, 1, 1), (1, 1)),  # "same" ×2 upsampling
    ((3, 3), (1, 1), (1, 1, 1, 1), (0, 0)),  # stride 1: a flipped conv
    ((3, 3), (2, 2), (0, 0, 0, 0), (0, 0)),
    ((5, 5), (3, 3), (2, 2, 2, 2), (1, 1)),
    ((2, 3), (2, 1), (0, 1, 1, 0), (1, 0)),  # non-square kernel and strides, uneven pads
    ((1, 1), (2, 2), (0, 0, 0, 0), (1, 1)),  # phases with no tap: zeros
    ((3, 3), (2, 2), (2, 2, 2, 2), (0, 0)),  # padding past the taps: the input's edges cut
]


def _up_convs():
    g = GraphBuilder(seed=35)
    x = g.input([1, 16, 7, 9])
    outputs = []
    for kernel, strides, pads, output_padding in CONFIGS:
        weight = g.const(g.rng.standard_normal((16, 24, *kernel)) * 0.2, "w")
        bias = g.const(g.rng.standard_normal(24) * 0.1, "b")
        outputs.append(
            g.node("ConvTranspose", [x, weight, bias], kernel_shape=list(kernel), strides=list(strides), pads=list(pads), output_padding=list(output_padding))
        )
    return g.model(outputs)


@pytest.mark.parametrize("preset", x86_kernel_presets())
def test_transposed_convs_match_onnxruntime_on_conv_kernels(tmp_path, preset):
    model = _up_convs()
    inputs = {"x": np.random.default_rng(4).standard_normal((1, 16, 7, 9)).astype(np.float32)}
    artifact = slimtvm.compile(model, str(tmp_path / "up.so"), target=preset)
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
    passes = {entry["name"]: entry for entry in artifact.manifest["passes"]}
    assert passes["transposed_convs"]["rewritten"] == len(CONFIGS)
    assert passes["kernels"]["generic_fallbacks"] == [], passes["kernels"]


def test_a_unet_step_runs_every_conv_on_slimtvm_kernels(tmp_path):
    """Encoder conv, max-pool, conv, 2×2/2 up-conv, concat with the skip, conv: as onnxruntime."""
    g = GraphBuilder(seed=36)
    x = g.input([1, 8, 32, 32])
    skip = g.relu(g.conv(x, 8, 32, kernel=3, pads=(1, 1, 1, 1)))
    down = g.relu(g.conv(g.node("MaxPool", [skip], kernel_shape=[2, 2], strides=[2, 2]), 32, 64, kernel=3, pads=(1, 1, 1, 1)))
    up = g.conv_transpose(down, 64, 32, kernel=2, stride=2)
    model = g.model(g.conv(g.relu(g.node("Concat", [skip, up], axis=1)), 64, 4, kernel=1))
    inputs = {"x": np.random.default_rng(5).standard_normal((1, 8, 32, 32)).astype(np.float32)}
    artifact = slimtvm.compile(model, str(tmp_path / "unet.so"))
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
    from slimtvm.compiler.layer_table import decisions_from_manifest, layer_rows

    rows = layer_rows(model, decisions_from_manifest(artifact.manifest))  # what `slimtvm inspect` prints
    assert next(row.plan for row in rows if row.op == "ConvTranspose").startswith("fp32 conv") and not any("?" in row.plan for row in rows)
    kernels = next(entry for entry in artifact.manifest["passes"] if entry["name"] == "kernels")
    assert kernels["generic_fallbacks"] == [] and kernels["by_family"].get("conv2d", 0) + kernels["by_family"].get("winograd_conv2d", 0) >= 4


def test_grouped_transposed_convs_are_left_to_tvm_and_stay_exact(tmp_path):
    g = GraphBuilder(seed=37)
    x = g.input([1, 16, 8, 8])
    model = g.model(g.conv_transpose(x, 16, 16, kernel=2, stride=2, groups=4))
    inputs = {"x": np.random.default_rng(6).standard_normal((1, 16, 8, 8)).astype(np.float32)}
    artifact = slimtvm.compile(model, str(tmp_path / "grouped.so"))
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
    passes = {entry["name"]: entry for entry in artifact.manifest["passes"]}
    assert passes["transposed_convs"]["rewritten"] == 0 and passes["kernels"]["generic_fallbacks"]  # named, not hidden
