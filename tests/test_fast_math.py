"""Sigmoid, SiLU and softmax run with a vectorized polynomial exponential: within 1e-4 of
onnxruntime over float32's whole range (saturating, never inf or NaN), in both x86 kernel
variants, fused into conv epilogues."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_outputs_match, onnxruntime_outputs
from onnx_builders import GraphBuilder

import slimtvm

EXTREMES = np.array([0.0, -0.0, 1e-30, -1e-30, 1e-3, -1e-3, 20.0, -20.0, 87.0, -87.0, 88.5, -88.5, 100.0, -100.0, 3e38, -3e38], np.float32)


def _values(shape, seed):
    values = np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * 8
    flat = values.reshape(-1)
    flat[: EXTREMES.size] = EXTREMES
    return values


@pytest.mark.parametrize("preset", ["x86-64", "host"])
def test_silu_after_a_conv_and_a_plain_sigmoid_match_onnxruntime(tmp_path, preset):
    from conftest import x86_kernel_presets

    if preset not in x86_kernel_presets():
        pytest.skip(f"{preset} kernels do not run on this host")
    g = GraphBuilder(seed=21)
    x = g.input([1, 16, 12, 12])
    s = g.input([1, 16, 12, 12], name="s")
    y = g.conv(x, 16, 32, kernel=3, pads=(1, 1, 1, 1))
    silu = g.node("Mul", [y, g.node("Sigmoid", [y])])
    model = g.model([silu, g.node("Sigmoid", [s])])
    runner = slimtvm.compile(model, str(tmp_path / "silu.so"), target=preset).load()
    # the conv's input is large enough for saturated sigmoids; the plain sigmoid sees float32's extremes
    inputs = {"x": np.random.default_rng(1).standard_normal((1, 16, 12, 12)).astype(np.float32) * 8, "s": _values((1, 16, 12, 12), seed=2)}
    outputs = runner.run(inputs)
    assert all(np.isfinite(value).all() for value in outputs.values())
    assert_outputs_match(outputs, onnxruntime_outputs(model, inputs))
    sigmoid = outputs[model.graph.output[1].name].reshape(-1)[: EXTREMES.size]
    assert sigmoid[EXTREMES >= 88].min() == 1.0 and sigmoid[EXTREMES <= -88].max() < 1e-38


@pytest.mark.parametrize("axis", [1, -1])
def test_softmax_on_any_axis_matches_onnxruntime(tmp_path, axis):
    g = GraphBuilder(seed=22)
    x = g.input([1, 16, 4, 50])
    model = g.model(g.node("Softmax", [x], axis=axis))
    runner = slimtvm.compile(model, str(tmp_path / "softmax.so")).load()
    for seed in range(2):
        inputs = {"x": _values((1, 16, 4, 50), seed) / (1 if seed else 1e36)}
        outputs = runner.run(inputs)
        assert all(np.isfinite(value).all() for value in outputs.values())
        assert_outputs_match(outputs, onnxruntime_outputs(model, inputs))
