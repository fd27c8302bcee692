"""``--binarize weights+activations`` builds XNOR-Net blocks (BN → binarizer → binary layer, max-pools
on real values) and, with calibration data, centres each binarizer on its median and refits the
binary layers; the compiled artifact matches onnxruntime on the saved model.

The default suite runs ``SLIMTVM_XNOR_EXAMPLES`` random Conv → BN → ReLU → MaxPool stacks split
between the x86 kernel variants the host runs; ``-m slow`` runs 100 per variant.
"""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
from conftest import assert_outputs_match, onnxruntime_outputs, x86_kernel_presets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx_builders import GraphBuilder

import slimtvm
from slimtvm.cli import main
from slimtvm.compress.binarize_float_layers import BinarizeRequest, apply_request
from slimtvm.compress.xnor_blocks import _midpoint_thresholds

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOUR_CONV = os.path.join(REPO, "examples", "digits_cnn_4conv.onnx")
CALIBRATION = os.path.join(REPO, "examples", "digits_calibration.npz")
EXAMPLES = int(os.environ.get("SLIMTVM_XNOR_EXAMPLES", "12"))
COMMON = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _binarizer_sources(model: onnx.ModelProto) -> list:
    """The op feeding each activation binarizer (``Less(x, 0)`` of slimtvm's sign)."""
    producers = {out: node for node in model.graph.node for out in node.output}
    return [producers[node.input[0]].op_type for node in model.graph.node if node.op_type == "Less"]


def test_thresholds_split_at_the_median_between_values():
    """Odd and even counts, a constant row (threshold below it: the bit stays +1), and values
    equal but for float rounding (one value: the threshold goes to the next real gap)."""
    rows = [[0.0, 1, 2, 3, 4], [0.0, 1, 2, 3], [2.0, 2, 2], [0, 1, 2, 2.00000001, 2.00000002, 3, 4.0]]
    assert [float(_midpoint_thresholds(np.array([row]))[0]) for row in rows] == [2.5, 1.5, 0.0, 2.5]


def test_digits_cnn_binarized_in_xnor_order_is_exact_and_keeps_accuracy(tmp_path, capsys):
    """The float CNN of four Conv → BN → ReLU (→ MaxPool) blocks (99.56% held out), first and last
    layers float, 64 calibration images: every binarizer is fed by a BN (no ReLU or max-pool
    between), the three binary convs run the binary kernels, the artifact matches onnxruntime on
    the saved model, and held-out accuracy is at least 50% (without calibration: chance)."""
    saved, library = str(tmp_path / "xnor.onnx"), str(tmp_path / "xnor.so")
    argv = ["compile", FOUR_CONV, "-o", library, "--binarize", "weights+activations", "--calibration", CALIBRATION, "--save-onnx", saved]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "binarizers in XNOR-Net block order (BN → sign → binary layer; ReLUs dropped, max-pools before the BN); 3 centred" in out
    model = onnx.load(saved)
    assert _binarizer_sources(model) == ["BatchNormalization"] * 3
    assert [n.op_type for n in model.graph.node].count("Relu") == 1  # the one after the last conv, before the float head
    manifest = json.load(open(library[:-3] + ".json"))
    assert next(p for p in manifest["passes"] if p["name"] == "binarize")["binary_convs"] == 3
    test = np.load(os.path.join(REPO, "examples", "digits_test.npz"))
    artifact = slimtvm.load(library)
    predictions = []
    for image in test["images"]:
        ours = artifact.run({"image": image[None]})
        predictions.append(ours["logits"].argmax())
    for image in test["images"][:20]:
        assert_outputs_match(artifact.run({"image": image[None]}), onnxruntime_outputs(saved, {"image": image[None]}))
    assert np.mean(np.array(predictions) == test["labels"]) >= 0.5
    uncalibrated, _ = apply_request(FOUR_CONV, BinarizeRequest("weights+activations"))
    assert _binarizer_sources(uncalibrated) == ["BatchNormalization"] * 3


@st.composite
def conv_stacks(draw):
    """A random stack of Conv → BN → ReLU (→ MaxPool) blocks and a Gemm head: (model, input shape)."""
    g = GraphBuilder(draw(st.integers(0, 2**31 - 1)))
    channels = draw(st.sampled_from([3, 8, 16]))
    size = draw(st.integers(8, 14))
    shape = [1, channels, size, size]
    x = g.input(shape)
    for _ in range(draw(st.integers(2, 4))):
        out = draw(st.sampled_from([8, 16, 24, 32]))
        kernel = draw(st.sampled_from([1, 3]))
        x = g.conv(x, channels, out, kernel=kernel, pads=[kernel // 2] * 4, bias=draw(st.booleans()))
        x = g.batchnorm(x, out, negative_scales=draw(st.booleans()))
        x = g.relu(x)
        if size >= 4 and draw(st.booleans()):
            x = g.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
            size //= 2
        channels = out
    x = g.node("Flatten", [g.node("GlobalAveragePool", [x])])
    return g.model(g.gemm(x, channels, draw(st.integers(2, 10)))), shape


def _check_random_stacks(examples: int, tmp_path, target: str) -> None:
    @settings(max_examples=examples, **COMMON)
    @given(case=conv_stacks(), calibrated=st.booleans())
    def check(case, calibrated):
        model, shape = case
        samples = np.random.default_rng(0).standard_normal((4, *shape[1:])).astype(np.float32)
        np.savez(tmp_path / "cal.npz", x=samples)
        request = BinarizeRequest("weights+activations", calibration=str(tmp_path / "cal.npz") if calibrated else None)
        binarized, _ = apply_request(model, request)
        assert set(_binarizer_sources(binarized)) <= {"BatchNormalization"}
        inputs = {"x": samples[:1]}  # a calibration input: no value lies within rounding of a threshold
        artifact = slimtvm.compile(binarized, str(tmp_path / "model.so"), target=target)
        assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(binarized, inputs))

    check()


@pytest.mark.parametrize("target", x86_kernel_presets())
def test_random_conv_stacks_binarized_in_xnor_order_compile_exactly(tmp_path, target):
    _check_random_stacks(max(1, EXAMPLES // len(x86_kernel_presets())), tmp_path, target)


@pytest.mark.slow
@pytest.mark.parametrize("target", x86_kernel_presets())
def test_many_random_conv_stacks_binarized_in_xnor_order_compile_exactly(tmp_path, target):
    _check_random_stacks(100, tmp_path, target)
