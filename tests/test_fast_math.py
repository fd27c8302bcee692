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


@pytest.mark.parametrize("preset", ["x86-64", "host"])
def test_lrn_runs_without_powf_and_matches_onnxruntime(tmp_path, preset):
    """GoogLeNet's LRN (β = 0.75) between convs: its power is square roots and multiplies (no call
    to ``powf`` in the library's code), and the outputs match onnxruntime's LRN."""
    import subprocess

    from conftest import x86_kernel_presets

    if preset not in x86_kernel_presets():
        pytest.skip(f"{preset} kernels do not run on this host")
    g = GraphBuilder(seed=23)
    x = g.input([1, 8, 14, 14])
    y = g.relu(g.conv(x, 8, 32, kernel=3, pads=(1, 1, 1, 1)))
    y = g.node("LRN", [y], size=5, alpha=1e-4, beta=0.75, bias=1.0)
    model = g.model(g.conv(y, 32, 16, kernel=1))
    library = str(tmp_path / "lrn.so")
    runner = slimtvm.compile(model, library, target=preset).load()
    inputs = {"x": np.random.default_rng(3).standard_normal((1, 8, 14, 14)).astype(np.float32) * 30}  # large: the normalisation matters
    assert_outputs_match(runner.run(inputs), onnxruntime_outputs(model, inputs))
    disassembly = subprocess.run(["objdump", "-d", library], capture_output=True, text=True, check=True).stdout
    assert not [line for line in disassembly.splitlines() if "call" in line and "<powf" in line]


@pytest.mark.parametrize("exponent", [0.25, 0.5, 0.75, 1.0, 1.5, 2.25, 3.0, -0.5, -0.75, -2.0, 4.0, 0.3, 5.0, float("nan"), float("inf")])
def test_pow_by_a_constant_matches_onnxruntime_value_by_value(tmp_path, exponent):
    """``Pow(x, p)``: multiples of ¼ up to 4 by roots and multiplies, others (0.3, 5, NaN, ∞) by
    ``powf``; each value within 2e-6 of onnxruntime's relative to itself (a few ulp), zeros,
    infinities and the NaNs of negative bases with fractional exponents as onnxruntime has them."""
    g = GraphBuilder(seed=24)
    x = g.input([4, 64])
    model = g.model(g.node("Pow", [x, g.const(np.float32(exponent), "p")]))
    runner = slimtvm.compile(model, str(tmp_path / "pow.so")).load()
    values = np.abs(_values((4, 64), seed=4))
    values[0, :8] = [0.0, 1e-30, 1e-3, 1.0, 3e38, np.inf, 7.5, 1e20]
    values[3] = -values[2]  # negative bases
    inputs = {"x": values}
    actual = next(iter(runner.run(inputs).values()))
    expected = next(iter(onnxruntime_outputs(model, inputs).values()))
    assert np.array_equal(np.isnan(actual), np.isnan(expected))
    finite = np.isfinite(expected) & (expected != 0)
    assert np.array_equal(actual[~finite & ~np.isnan(expected)], expected[~finite & ~np.isnan(expected)])
    assert np.max(np.abs(actual[finite] / expected[finite] - 1)) <= 2e-6


@pytest.mark.parametrize("preset", ["x86-64", "host"])
def test_erf_and_a_gelu_after_a_conv_match_onnxruntime_without_erff_calls(tmp_path, preset):
    """ConvNeXt's exact GELU, ``x · (erf(x / √2) + 1) · 0.5``, fused after a conv, and a plain Erf
    over float32's extremes: the library calls no ``erff`` (TVM's default, one scalar call per
    value: ConvNeXt-Tiny 104 → 39 ms), and the values are onnxruntime's within 1e-6."""
    import subprocess

    from conftest import x86_kernel_presets

    if preset not in x86_kernel_presets():
        pytest.skip(f"{preset} kernels do not run on this host")
    g = GraphBuilder(seed=24)
    x = g.input([1, 16, 12, 12])
    s = g.input([1, 16, 12, 12], name="s")
    y = g.conv(x, 16, 32, kernel=1)
    erf = g.node("Erf", [g.node("Div", [y, g.const(np.float32(np.sqrt(2.0)), "sqrt2")])])
    gelu = g.node("Mul", [g.node("Mul", [y, g.node("Add", [erf, g.const(np.float32(1.0), "one")])]), g.const(np.float32(0.5), "half")])
    model = g.model([g.conv(gelu, 32, 16, kernel=1), g.node("Erf", [s])])
    library = str(tmp_path / "gelu.so")
    runner = slimtvm.compile(model, library, target=preset).load()
    inputs = {"x": np.random.default_rng(4).standard_normal((1, 16, 12, 12)).astype(np.float32) * 2, "s": _values((1, 16, 12, 12), seed=5)}
    ours, theirs = runner.run(inputs), onnxruntime_outputs(model, inputs)
    assert_outputs_match(ours, theirs)
    name = model.graph.output[1].name
    assert np.abs(ours[name] - theirs[name]).max() <= 1e-6
    disassembly = subprocess.run(["objdump", "-d", library], capture_output=True, text=True, check=True).stdout
    assert not [line for line in disassembly.splitlines() if "call" in line and "<erf" in line]


@pytest.mark.parametrize("preset", ["x86-64", "host"])
def test_tanh_and_gpt2s_gelu_after_a_matmul_match_onnxruntime_without_libm_calls(tmp_path, preset):
    """GPT-2's ``gelu_new``, ``0.5 · x · (1 + tanh(√(2/π) · (x + 0.044715 · x³)))``, fused after a
    token matmul, and a plain Tanh over float32's extremes: the library calls no ``tanhf`` or
    ``expf`` (TVM's default tanh; GPT-2's GELU was a quarter of its time), and the values are
    onnxruntime's within 1e-6."""
    import subprocess

    from conftest import x86_kernel_presets

    if preset not in x86_kernel_presets():
        pytest.skip(f"{preset} kernels do not run on this host")
    g = GraphBuilder(seed=26)
    x = g.input([1, 40, 64])
    s = g.input([1, 40, 64], name="s")
    y = g.node("MatMul", [x, g.const(g.rng.standard_normal((64, 96)) / 8, "w")])
    inner = g.node("Add", [y, g.node("Mul", [g.node("Pow", [y, g.const(np.float32(3.0), "three")]), g.const(np.float32(0.044715), "c")])])
    tanh = g.node("Tanh", [g.node("Mul", [inner, g.const(np.float32(np.sqrt(2 / np.pi)), "root")])])
    gelu = g.node("Mul", [g.node("Mul", [y, g.const(np.float32(0.5), "half")]), g.node("Add", [tanh, g.const(np.float32(1.0), "one")])])
    model = g.model([g.node("MatMul", [gelu, g.const(g.rng.standard_normal((96, 64)) / 10, "w2")]), g.node("Tanh", [s])])
    library = str(tmp_path / "gelu_new.so")
    runner = slimtvm.compile(model, library, target=preset).load()
    inputs = {"x": np.random.default_rng(6).standard_normal((1, 40, 64)).astype(np.float32) * 2, "s": _values((1, 40, 64), seed=7)}
    ours, theirs = runner.run(inputs), onnxruntime_outputs(model, inputs)
    assert_outputs_match(ours, theirs)
    name = model.graph.output[1].name
    assert np.abs(ours[name] - theirs[name]).max() <= 1e-6
    disassembly = subprocess.run(["objdump", "-d", library], capture_output=True, text=True, check=True).stdout
    assert not [line for line in disassembly.splitlines() if "call" in line and ("<tanh" in line or "<exp" in line)]


def test_nan_and_infinities_pass_through_sigmoid_erf_and_tanh_as_in_onnxruntime(tmp_path):
    """The approximations clamp their input; a NaN must not become a bound (sigmoid(NaN) was 4e-39
    and erf(NaN) 1 before): NaN stays NaN, ±∞ give onnxruntime's limits."""
    g = GraphBuilder(seed=25)
    s = g.input([1, 16], name="s")
    model = g.model([g.node("Sigmoid", [s]), g.node("Erf", [s]), g.node("Tanh", [s])])
    runner = slimtvm.compile(model, str(tmp_path / "nan.so")).load()
    values = np.array([[np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.0, 5.0, -5.0, 90.0, -90.0, np.nan, 1e-20, -1e-20, 3e38, -3e38]], np.float32)
    ours, theirs = runner.run({"s": values}), onnxruntime_outputs(model, {"s": values})
    for name in theirs:
        np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-6, atol=1e-7, equal_nan=True)
        assert np.array_equal(np.isnan(ours[name]), np.isnan(values))
