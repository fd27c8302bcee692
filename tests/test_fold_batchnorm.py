"""Batch-norm folding: every position is exact against onnxruntime, and the counts are right."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
import tvm
from conftest import assert_outputs_match, onnxruntime_outputs
from onnx_builders import GraphBuilder, bn_positions_model, digits_like_input
from tvm import relax

from slimtvm.frontend.onnx_import import import_onnx
from slimtvm.passes.sequence import GraphPasses

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


def relax_op_counts(mod) -> dict:
    """How many calls of each Relax operator the module's functions contain."""
    counts = {}

    def visit(expr):
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
            counts[expr.op.name] = counts.get(expr.op.name, 0) + 1

    for _, func in mod.functions.items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return counts


def run_graph_passes(model, input_shapes=None):
    frontend = import_onnx(model, input_shapes)
    passes = GraphPasses()
    with tvm.target.Target({"kind": "llvm"}):
        mod = tvm.transform.Sequential(passes.sequence())(frontend.mod)
    return mod, passes.reports()["fold_batchnorm"]


def test_every_position_folds_and_matches_onnxruntime(compile_and_run):
    model = bn_positions_model()
    mod, report = run_graph_passes(model)
    assert report["batchnorms_folded"] == 8
    assert report["folded_by_position"] == {
        "bn_then_conv": 2,
        "bn_then_gemm": 1,
        "conv_then_bn": 3,
        "conv_transpose_then_bn": 1,
        "gemm_then_bn": 1,
    }
    assert report["batchnorms_decomposed"] == 1
    assert list(report["decomposed_because"]) == ["follows relu, and not every user is a conv or matmul"]
    assert relax_op_counts(mod).get("relax.nn.batch_norm", 0) == 0
    inputs = {"x": digits_like_input((1, 4, 12, 11), seed=3)}
    outputs, artifact = compile_and_run(model, inputs)
    assert_outputs_match(outputs, onnxruntime_outputs(model, inputs))
    assert artifact.manifest["passes"][0]["batchnorms_folded"] == 8


@pytest.mark.parametrize(
    "pads,stride,dilation",
    [((0, 0, 0, 0), 1, 1), ((1, 1, 1, 1), 1, 1), ((2, 0, 1, 3), 2, 1), ((1, 2, 2, 1), 1, 2), ((3, 3, 3, 3), 3, 2)],
)
def test_bn_before_padded_conv_is_exact_at_the_border(compile_and_run, pads, stride, dilation):
    """Zero padding pads BN(x), not x: the border correction must make every output position exact."""
    g = GraphBuilder(seed=7)
    x = g.input([1, 3, 9, 8])
    y = g.conv(g.batchnorm(x, 3), 3, 5, kernel=3, stride=stride, pads=pads, dilation=dilation)
    model = g.model(y)
    _, report = run_graph_passes(model)
    assert report["folded_by_position"] == {"bn_then_conv": 1}
    inputs = {"x": digits_like_input((1, 3, 9, 8), seed=1)}
    outputs, _ = compile_and_run(model, inputs)
    expected = onnxruntime_outputs(model, inputs)
    assert_outputs_match(outputs, expected)
    if any(pads):  # the border map matters: dropping it must be visibly wrong
        name = next(iter(expected))
        assert not np.allclose(outputs[name][..., 0, 0], outputs[name][..., outputs[name].shape[2] // 2, outputs[name].shape[3] // 2])


def test_shared_conv_output_is_not_folded_backwards(compile_and_run):
    """conv → {BN, Add}: folding into the conv would change the Add's input, so the BN is decomposed."""
    g = GraphBuilder(seed=2)
    x = g.input([1, 4, 6, 6])
    c = g.conv(x, 4, 4, pads=(1, 1, 1, 1))
    b = g.batchnorm(c, 4)
    model = g.model(g.node("Add", [b, c]))
    _, report = run_graph_passes(model)
    assert report["batchnorms_folded"] == 0
    assert report["decomposed_because"] == {"input from add is also used elsewhere": 1}
    inputs = {"x": digits_like_input((1, 4, 6, 6))}
    outputs, _ = compile_and_run(model, inputs)
    assert_outputs_match(outputs, onnxruntime_outputs(model, inputs))


def test_bn_feeding_conv_and_relu_is_decomposed(compile_and_run):
    g = GraphBuilder(seed=4)
    x = g.input([1, 2, 5, 5])
    b = g.batchnorm(x, 2)
    model = g.model([g.conv(b, 2, 3, pads=(1, 1, 1, 1)), g.relu(b)])
    _, report = run_graph_passes(model)
    assert report["batchnorms_decomposed"] == 1 and report["batchnorms_folded"] == 0
    inputs = {"x": digits_like_input((1, 2, 5, 5))}
    outputs, _ = compile_and_run(model, inputs)
    assert_outputs_match(outputs, onnxruntime_outputs(model, inputs))


def test_light_resnet50_has_no_batchnorm_left():
    """The light ResNet-50 has 53 BatchNormalization nodes, all Conv→BN: all must be gone."""
    path = os.path.join(LIGHT, "light_resnet50.onnx")
    onnx_count = sum(node.op_type == "BatchNormalization" for node in onnx.load(path).graph.node)
    assert onnx_count == 53
    mod, report = run_graph_passes(path)
    assert report["batchnorms_folded"] == onnx_count
    assert report["batchnorms_decomposed"] == 0
    counts = relax_op_counts(mod)
    assert counts.get("relax.nn.batch_norm", 0) == 0
    assert counts["relax.nn.conv2d"] == 53  # folding added no layers
