"""3-D convs as 2-D convs over frames (passes/conv3d_as_conv2d.py), against onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_outputs_match, onnxruntime_outputs, x86_kernel_presets
from onnx_builders import GraphBuilder, digits_like_input

import slimtvm

CASES = [  # (kernel, stride, pads: front, top, left, back, bottom, right, dilation)
    ((3, 3, 3), (1, 1, 1), (1, 1, 1, 1, 1, 1), (1, 1, 1)),  # R3D's blocks
    ((3, 7, 7), (1, 2, 2), (1, 3, 3, 1, 3, 3), (1, 1, 1)),  # R3D's stem
    ((1, 3, 3), (1, 1, 1), (0, 1, 1, 0, 1, 1), (1, 1, 1)),  # R(2+1)D's spatial half
    ((3, 1, 1), (2, 1, 1), (1, 0, 0, 1, 0, 0), (1, 1, 1)),  # its temporal half, strided in time
    ((2, 3, 3), (2, 2, 2), (0, 1, 1, 1, 1, 1), (2, 1, 1)),  # dilated in time, uneven padding
    ((1, 1, 1), (2, 2, 2), (0, 0, 0, 0, 0, 0), (1, 1, 1)),  # a strided 1×1×1 downsampling shortcut
]


def _conv3d(g, x, cin, cout, kernel, stride, pads, dilation):
    weight = g.rng.normal(0, np.sqrt(2.0 / (cin * int(np.prod(kernel)))), size=(cout, cin, *kernel))
    bias = g.rng.normal(0, 0.1, size=cout)
    return g.node("Conv", [x, g.const(weight), g.const(bias, "b")], kernel_shape=list(kernel), strides=list(stride), pads=list(pads), dilations=list(dilation))


@pytest.mark.parametrize("preset", x86_kernel_presets())
@pytest.mark.parametrize("kernel,stride,pads,dilation", CASES)
def test_conv3d_runs_as_2d_convs_and_matches_onnxruntime(tmp_path, preset, kernel, stride, pads, dilation):
    g = GraphBuilder(seed=sum(kernel))
    shape = (1, 5, 6, 12, 10)
    x = g.input(list(shape))
    y = g.relu(_conv3d(g, x, 5, 16, kernel, stride, pads, dilation))
    model = g.model(_conv3d(g, y, 16, 8, (3, 3, 3), (1, 1, 1), (1, 1, 1, 1, 1, 1), (1, 1, 1)))
    inputs = {"x": digits_like_input(shape, seed=len(kernel))}
    artifact = slimtvm.compile(model, str(tmp_path / "conv3d.so"), target=preset)
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
    passes = {entry["name"]: entry for entry in artifact.manifest["passes"]}
    assert passes["conv3d_as_conv2d"]["rewritten"] == 2
    assert passes["kernels"]["generic_fallbacks"] == []


def test_grouped_conv3d_stays_on_tvms_schedule_and_is_named(tmp_path):
    g = GraphBuilder(seed=7)
    x = g.input([1, 4, 4, 6, 6])
    weight = g.rng.normal(0, 0.3, size=(4, 1, 3, 3, 3))
    model = g.model(g.node("Conv", [x, g.const(weight)], kernel_shape=[3, 3, 3], pads=[1] * 6, group=4))
    inputs = {"x": digits_like_input((1, 4, 4, 6, 6), seed=7)}
    artifact = slimtvm.compile(model, str(tmp_path / "grouped.so"), target="x86-64")
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
    passes = {entry["name"]: entry for entry in artifact.manifest["passes"]}
    assert passes["conv3d_as_conv2d"]["rewritten"] == 0
    assert len(passes["kernels"]["generic_fallbacks"]) == 1
