"""Binarized networks as Larq exports them (tf2onnx at opset 17), and the Pads exporters put in front
of binary convs.

``tests/data/larq_tiny.onnx`` was written by ``scripts/export_larq_models.py --tiny`` (TensorFlow,
Larq and tf2onnx in .venv-lce): a float stem, three binary ``QuantConv2D`` layers (two with
``pad_values=1``), BN, a residual add, a max-pool and a dense classifier. tf2onnx puts NHWC
transposes around every binarizer and Pad; the larq-zoo networks (BiRealNet, QuickNet) are checked
the same way by benchmarks/larq_models.py.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from conftest import assert_outputs_match, onnxruntime_outputs, x86_kernel_presets
from onnx_builders import GraphBuilder

import slimtvm
from slimtvm.compiler.sign_flips import compare_with_sign_flips, with_sign_inputs_as_outputs

MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "larq_tiny.onnx")
BINARY_QUANTCONVS = 3  # what scripts/export_larq_models.py --tiny printed for this file


@pytest.fixture(scope="module", params=x86_kernel_presets() or ["host"])
def compiled(request, tmp_path_factory):
    """(the probe model, its pre-Sign outputs, its build, the build of the model as exported)."""
    folder = tmp_path_factory.mktemp("larq")
    probe, sign_inputs = with_sign_inputs_as_outputs(onnx.load(MODEL))
    return (
        probe,
        sign_inputs,
        slimtvm.compile(probe, str(folder / "probe.so"), target=request.param),
        slimtvm.compile(MODEL, str(folder / "larq.so"), target=request.param),
    )


def test_every_binary_quantconv_is_recognised_and_lowered(compiled):
    _, sign_inputs, _, artifact = compiled
    passes = {p["name"]: p for p in artifact.manifest["passes"]}
    assert passes["binarize"]["binary_convs"] == passes["binary_blocks"]["binary_convs_lowered"] == BINARY_QUANTCONVS, passes
    assert artifact.manifest["onnx_rewrites"]["layout_transpose_pairs_removed"] >= BINARY_QUANTCONVS
    plans = [layer["plan"] for layer in artifact.manifest["layers"] if layer["kernel"] == "binary_conv2d"]
    assert sum("one-padding (+1)" in plan for plan in plans) == 2, plans
    assert all("sign(sign(x) + c)" in plan for plan in plans), plans
    assert len(sign_inputs) == BINARY_QUANTCONVS


def test_outputs_match_onnxruntime_up_to_sign_flips(compiled):
    probe, sign_inputs, probe_artifact, artifact = compiled
    probe_runner, runner = probe_artifact.load(), artifact.load()
    (logits,) = [value.name for value in onnx.load(MODEL).graph.output]
    flipped = 0
    for seed in range(20):
        inputs = {"input": np.random.default_rng(seed).standard_normal((1, 16, 16, 3)).astype(np.float32)}
        reference = onnxruntime_outputs(probe, inputs)
        for ours in (probe_runner.run(inputs), runner.run(inputs)):
            comparison = compare_with_sign_flips(ours, reference, sign_inputs, [logits])
            assert comparison.agrees(1e-4), (seed, comparison)
        flipped += comparison.flips + comparison.near_zero > 0
    # 16·16·32 pre-Sign values per layer: a few inputs have one within 1e-5 of 0 (not compared
    # strictly, flips checked); most must be compared strictly, or the test would prove little
    assert flipped <= 10, f"{flipped} of 20 inputs had pre-Sign values at rounding distance of 0"


def _padded_sign_conv(value: float, conv_pads=(0, 0, 0, 0)):
    g = GraphBuilder(seed=3)
    x = g.input([1, 16, 6, 6])
    padded = g.node("Pad", [g.node("Sign", [x]), g.const([0, 0, 1, 1, 0, 0, 1, 1], "pads", dtype=np.int64), g.const(np.float32(value), "value")])
    weight = (g.rng.choice([-1.0, 1.0], size=(16, 16, 3, 3)) * 0.25).astype(np.float32)
    out = g.node("Conv", [padded, g.const(weight)], kernel_shape=[3, 3], pads=list(conv_pads))
    inputs = {"x": np.random.default_rng(4).standard_normal((1, 16, 6, 6)).astype(np.float32)}
    return g.model(out), inputs


@pytest.mark.parametrize(
    ("value", "conv_pads", "reason"),
    [
        (0.5, (0, 0, 0, 0), "pad value 0.5 before the conv is neither 0 nor ±1"),
        (1.0, (1, 1, 1, 1), "a Pad of value 1 followed by the conv's own zero padding"),
    ],
)
def test_a_pad_no_kernel_computes_keeps_the_layer_float_and_says_why(tmp_path, value, conv_pads, reason):
    model, inputs = _padded_sign_conv(value, conv_pads)
    artifact = slimtvm.compile(model, str(tmp_path / "model.so"))
    report = next(p for p in artifact.manifest["passes"] if p["name"] == "binarize")
    assert report["binary_convs"] == 0 and report["stayed_float_because"] == {reason: 1}, report
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))


def test_a_pad_in_front_of_a_float_conv_is_no_refusal(tmp_path):
    """A Pad of 0.5 before a conv whose input is not binarized is an ordinary float layer: the
    binarize report must not list it among the layers that stayed float."""
    g = GraphBuilder(seed=3)
    x = g.input([1, 16, 6, 6])
    padded = g.node("Pad", [g.relu(x), g.const([0, 0, 1, 1, 0, 0, 1, 1], "pads", dtype=np.int64), g.const(np.float32(0.5), "value")])
    model = g.model(g.conv(padded, 16, 16, kernel=3))
    artifact = slimtvm.compile(model, str(tmp_path / "model.so"))
    report = next(p for p in artifact.manifest["passes"] if p["name"] == "binarize")
    assert report["stayed_float_because"] == {} and report["layers"] == [], report
    inputs = {"x": np.random.default_rng(4).standard_normal((1, 16, 6, 6)).astype(np.float32)}
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))


def test_transposes_that_do_not_cancel_are_kept(tmp_path):
    g = GraphBuilder(seed=5)
    x = g.input([1, 8, 4, 6])
    inner = g.node("Sign", [g.node("Transpose", [x], perm=[0, 2, 3, 1])])
    out = g.node("Transpose", [inner], perm=[0, 3, 2, 1])  # not the inverse: [1, 8, 6, 4]
    model = g.model(out)
    inputs = {"x": np.random.default_rng(6).standard_normal((1, 8, 4, 6)).astype(np.float32)}
    artifact = slimtvm.compile(model, str(tmp_path / "model.so"))
    assert artifact.manifest["onnx_rewrites"] == {}
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
