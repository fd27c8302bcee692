"""Grouped convs (1 < groups, not depthwise) run as one conv per group (lowering/
split_grouped_convs.py), against onnxruntime on every x86 build this host runs: ShuffleNet v1's
unit (group-4 1×1 convs of 68 channels per group, channel shuffle, depthwise 3×3), a strided
3×3 grouped conv, and groups whose channels fill blocks. None is left on the generic schedule;
a binary grouped conv stays whole, on the binary kernel."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_outputs_match, onnxruntime_outputs, x86_kernel_presets
from onnx_builders import GraphBuilder, digits_like_input

import slimtvm


def _pass(artifact, name: str) -> dict:
    return next(p for p in artifact.manifest["passes"] if p["name"] == name)


def _shufflenet_unit(channels: int = 272, groups: int = 4, size: int = 14):
    g = GraphBuilder(seed=4)
    x = g.input([1, channels, size, size])
    y = g.relu(g.batchnorm(g.conv(x, channels, channels, kernel=1, groups=groups, bias=False), channels))
    per_group = channels // groups
    shuffled = g.node("Reshape", [y, g.const(np.array([1, groups, per_group, size, size]), "shape", np.int64)])
    shuffled = g.node("Transpose", [shuffled], perm=[0, 2, 1, 3, 4])
    shuffled = g.node("Reshape", [shuffled, g.const(np.array([1, channels, size, size]), "shape", np.int64)])
    y = g.batchnorm(g.conv(shuffled, channels, channels, kernel=3, pads=(1, 1, 1, 1), groups=channels, bias=False), channels)
    y = g.batchnorm(g.conv(y, channels, channels, kernel=1, groups=groups, bias=False), channels)
    return g.model(g.relu(g.node("Add", [y, x]))), (1, channels, size, size)


def _strided_grouped(channels: int = 48, groups: int = 3):
    g = GraphBuilder(seed=5)
    x = g.input([1, channels, 15, 15])
    y = g.conv(x, channels, 2 * channels, kernel=3, stride=2, pads=(1, 1, 1, 1), groups=groups)
    return g.model(g.relu(y)), (1, channels, 15, 15)


def _blocked_groups():
    g = GraphBuilder(seed=6)
    x = g.input([1, 64, 10, 10])
    y = g.relu(g.conv(x, 64, 64, kernel=3, pads=(1, 1, 1, 1), groups=2))  # 32 per group: whole blocks
    return g.model(g.conv(y, 64, 32, kernel=1)), (1, 64, 10, 10)


@pytest.mark.parametrize("preset", x86_kernel_presets())
@pytest.mark.parametrize("build", [_shufflenet_unit, _strided_grouped, _blocked_groups])
def test_grouped_convs_run_per_group_and_match_onnxruntime(tmp_path, preset, build):
    model, shape = build()
    inputs = {"x": digits_like_input(shape, seed=2)}
    artifact = slimtvm.compile(model, str(tmp_path / "grouped.so"), target=preset)
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
    assert _pass(artifact, "kernels")["generic_fallbacks"] == []


def test_a_binary_grouped_conv_stays_one_binary_conv(tmp_path):
    g = GraphBuilder(seed=7)
    x = g.input([1, 16, 8, 8])
    weight = np.where(np.random.default_rng(1).standard_normal((16, 4, 3, 3)) >= 0, 0.5, -0.5)
    y = g.node("Conv", [g.node("Sign", [x]), g.const(weight)], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=4)
    model = g.model(y)
    inputs = {"x": digits_like_input((1, 16, 8, 8), seed=3)}
    artifact = slimtvm.compile(model, str(tmp_path / "binary.so"))
    assert _pass(artifact, "binarize")["binary_convs"] == 1
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
