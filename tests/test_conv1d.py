"""1-D convs (``Conv`` on ``[N, C, L]``: speech encoders) run as 2-D convs on a height-1 image
(frontend/conv1d_as_conv2d.py) on slimtvm's conv kernels, exactly as onnxruntime computes them:
strides, dilations, asymmetric pads, groups, a bias, a weight computed in the graph."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_outputs_match, onnxruntime_outputs, x86_kernel_presets
from onnx_builders import GraphBuilder

import slimtvm


@pytest.mark.parametrize("preset", x86_kernel_presets())
def test_one_dimensional_convs_match_onnxruntime_on_slimtvm_kernels(tmp_path, preset):
    g = GraphBuilder(seed=36)
    x = g.input([1, 12, 101])

    def conv1d(value, cin, cout, kernel, weight=None, **attrs):
        weight = weight or g.const(g.rng.normal(0, np.sqrt(2.0 / (cin // attrs.get("group", 1) * kernel)), (cout, cin // attrs.get("group", 1), kernel)))
        return g.node("Conv", [value, weight, g.const(g.rng.normal(0, 0.1, cout), "b")], kernel_shape=[kernel], **attrs)

    y = g.relu(conv1d(x, 12, 32, 10, strides=[5]))  # wav2vec2's first feature conv
    y = g.relu(conv1d(y, 32, 32, 3, strides=[2], pads=[1, 0], dilations=[1]))
    y = g.relu(conv1d(y, 32, 32, 3, pads=[2, 2], dilations=[2]))
    y = conv1d(y, 32, 32, 8, pads=[4, 3], group=4)  # a grouped positional conv
    # a weight computed in the graph (weight norm, as wav2vec2 exports it): g · v / ‖v‖
    v = g.const(g.rng.normal(0, 1, (16, 32, 3)), "v")
    norm = g.node("ReduceL2", [v], axes=[1, 2], keepdims=1)
    weight = g.node("Mul", [g.node("Div", [v, norm]), g.const(g.rng.uniform(0.5, 1.5, (16, 1, 1)), "gain")])
    model = g.model(conv1d(y, 32, 16, 3, weight=weight, pads=[1, 1]))
    inputs = {"x": np.random.default_rng(2).standard_normal((1, 12, 101)).astype(np.float32)}
    artifact = slimtvm.compile(model, str(tmp_path / "conv1d.so"), target=preset)
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
    assert artifact.manifest["onnx_rewrites"]["conv1d_as_conv2d"] == 5
    kernels = next(entry for entry in artifact.manifest["passes"] if entry["name"] == "kernels")
    assert kernels["generic_fallbacks"] == [] and kernels["by_family"].get("conv2d", 0) >= 4, kernels
