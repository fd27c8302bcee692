"""A Brevitas BNN exported with ``export_qonnx`` (BipolarQuant nodes), against QONNX's own executor.

``tests/data/brevitas_bnn_tiny.onnx`` was written by ``scripts/export_brevitas_bnn.py --tiny``
(torch + brevitas): FINN's CNV layout at 8-16-32 channels on 16×16 inputs — a float stem, five
binary 3×3 convs with BN and three max-pools, two binary fully connected layers, a float
classifier. onnxruntime cannot run QONNX ops; the reference is ``qonnx.core.onnx_exec``.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from conftest import x86_kernel_presets

import slimtvm
from slimtvm.compiler.sign_flips import compare_with_sign_flips, with_sign_inputs_as_outputs

qonnx_exec = pytest.importorskip("qonnx.core.onnx_exec", reason="qonnx is in the test extra: pip install -e '.[test]'")
from qonnx.core.modelwrapper import ModelWrapper  # noqa: E402

MODEL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "brevitas_bnn_tiny.onnx")
BINARY_CONVS, BINARY_DENSE = 5, 2  # what scripts/export_brevitas_bnn.py --tiny printed


@pytest.fixture(scope="module", params=x86_kernel_presets() or ["host"])
def compiled(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp("brevitas")
    probe, sign_inputs = with_sign_inputs_as_outputs(onnx.load(MODEL))
    return (
        sign_inputs,
        slimtvm.compile(probe, str(folder / "probe.so"), target=request.param),
        slimtvm.compile(MODEL, str(folder / "bnn.so"), target=request.param),
    )


def test_every_bipolar_quantized_layer_is_binary(compiled):
    _, _, artifact = compiled
    passes = {p["name"]: p for p in artifact.manifest["passes"]}
    assert passes["binarize"]["binary_convs"] == passes["binary_blocks"]["binary_convs_lowered"] == BINARY_CONVS, passes
    assert passes["binarize"]["binary_dense"] == passes["binary_blocks"]["binary_dense_lowered"] == BINARY_DENSE, passes
    assert passes["binary_blocks"]["thresholds_fused"] >= 3 and passes["binary_blocks"]["max_pools_on_bits"] >= 2, passes
    assert artifact.manifest["onnx_rewrites"]["qonnx_quantizers"] == 2 * (BINARY_CONVS + BINARY_DENSE)


def test_outputs_match_the_qonnx_executor_up_to_sign_flips(compiled):
    sign_inputs, probe_artifact, artifact = compiled
    model = onnx.load(MODEL)
    wrapper = ModelWrapper(model)
    weights = {init.name for init in model.graph.initializer}
    (name,), (output,) = [v.name for v in model.graph.input if v.name not in weights], [v.name for v in model.graph.output]
    probe_runner, runner = probe_artifact.load(), artifact.load()
    near = 0
    for seed in range(12):
        inputs = {name: np.random.default_rng(seed).standard_normal((1, 3, 16, 16)).astype(np.float32)}
        reference = qonnx_exec.execute_onnx(wrapper, inputs, return_full_exec_context=True)
        for ours in (probe_runner.run(inputs), runner.run(inputs)):
            comparison = compare_with_sign_flips(ours, reference, sign_inputs, [output])
            assert comparison.agrees(1e-4), (seed, comparison)
        near += comparison.near_zero > 0
    assert near <= 2, f"{near} of 12 inputs had pre-Sign values at rounding distance of 0"


def test_a_k_bit_quant_is_refused_in_one_line(tmp_path, capsys):
    from slimtvm.cli import main

    model = onnx.load(MODEL)
    node = next(n for n in model.graph.node if n.op_type == "BipolarQuant")
    bits = onnx.numpy_helper.from_array(np.array(4.0, dtype=np.float32), "four_bits")
    zero = onnx.numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero_point")
    model.graph.initializer.extend([bits, zero])
    node.op_type = "Quant"
    node.input.extend(["zero_point", "four_bits"])
    path = str(tmp_path / "quant.onnx")
    onnx.save(model, path)
    assert main(["compile", path, "-o", str(tmp_path / "quant.so")]) == 2
    err = capsys.readouterr().err.strip()
    assert "Quant" in err and "4-bit" in err and len(err.splitlines()) == 1, err
    assert not os.path.exists(tmp_path / "quant.so")


def _quant_model(bits: float, signed: int, zero_point: float, seed: int = 0):
    """A QONNX graph: Quant(x) (the given form, scale 0.4) → Conv 3×3 with weights Quant(W, 1 bit,
    signed: ±0.25) → BN-like scale; onnx.helper, domain qonnx.custom_op.general."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    domain = "qonnx.custom_op.general"
    weights = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)
    initializers = [
        numpy_helper.from_array(weights, "w"),
        numpy_helper.from_array(np.array(0.4, dtype=np.float32), "s"),
        numpy_helper.from_array(np.array(zero_point, dtype=np.float32), "z"),
        numpy_helper.from_array(np.array(bits, dtype=np.float32), "b"),
        numpy_helper.from_array(np.array(0.25, dtype=np.float32), "ws"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float32), "wz"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "wb"),
        numpy_helper.from_array(rng.uniform(0.5, 1.5, (1, 16, 1, 1)).astype(np.float32), "g"),
    ]
    nodes = [
        helper.make_node("Quant", ["x", "s", "z", "b"], ["q"], domain=domain, signed=signed, narrow=0, rounding_mode="ROUND"),
        helper.make_node("Quant", ["w", "ws", "wz", "wb"], ["qw"], domain=domain, signed=1, narrow=0, rounding_mode="ROUND"),
        helper.make_node("Conv", ["q", "qw"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["c", "g"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "quant",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 8, 8])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(domain, 1)])
    model.ir_version = 8
    return model


@pytest.mark.parametrize(
    ("bits", "signed", "zero_point", "k_bit_convs"),
    [(2, 0, 0.0, 1), (2, 1, 0.0, 0), (2, 0, 1.0, 0), (1, 1, 0.0, 0)],
    ids=["unsigned-2-bit", "signed-2-bit", "zero-point", "signed-1-bit"],
)
def test_quant_nodes_of_one_and_two_bits_match_the_qonnx_executor(tmp_path, bits, signed, zero_point, k_bit_convs):
    model = _quant_model(bits, signed, zero_point)
    artifact = slimtvm.compile(model, str(tmp_path / "quant.so"))
    passes = {p["name"]: p for p in artifact.manifest["passes"]}
    assert passes["binary_blocks"]["k_bit_activation_convs"] == k_bit_convs, passes
    if bits == 1:  # ±0.4 activations, ±0.25 weights: a binary conv
        assert passes["binary_blocks"]["binary_convs_lowered"] == 1, passes
    from qonnx.transformation.infer_shapes import InferShapes

    wrapper = ModelWrapper(model).transform(InferShapes())
    runner = artifact.load()
    for seed in range(4):
        inputs = {"x": np.random.default_rng(10 + seed).uniform(-0.5, 1.6, (1, 16, 8, 8)).astype(np.float32)}
        expected = qonnx_exec.execute_onnx(wrapper, inputs)["y"]
        actual = runner.run(inputs)["y"]
        assert np.abs(actual - expected).max() <= 1e-4 * np.abs(expected).max(), (seed, np.abs(actual - expected).max())
