"""Shape computations (Shape → Gather → Concat → Reshape, Slice bounds from Shape) fold into
constants before import, so detectors exported by torch compile as they are."""

from __future__ import annotations

import numpy as np
import onnx
from conftest import assert_outputs_match, onnxruntime_outputs
from detector_graphs import yolo_like_detector
from onnx import TensorProto, helper

import slimtvm
from slimtvm.frontend.fold_shapes import fold_shape_computations


def test_a_yolo_like_detector_compiles_as_exported_and_matches_onnxruntime(tmp_path):
    model = yolo_like_detector(seed=1)
    artifact = slimtvm.compile(model, str(tmp_path / "detector.so"))
    assert artifact.manifest["onnx_rewrites"]["shape_computations_folded"] >= 20
    assert artifact.manifest["outputs"][0]["shape"] == [1, 10, 320]  # 4 box coordinates + 6 classes, 16² + 8² anchors
    for seed in range(2):
        images = {"images": np.random.default_rng(seed).random((1, 3, 64, 64)).astype(np.float32)}
        assert_outputs_match(artifact.load().run(images), onnxruntime_outputs(model, images))


def test_folding_removes_every_shape_node_and_changes_no_value():
    model = yolo_like_detector(seed=2)
    folded, count, unfolded = fold_shape_computations(model)
    assert count > 0 and unfolded == []
    assert not [node for node in folded.graph.node if node.op_type in ("Shape", "Gather", "Unsqueeze", "Div")]
    onnx.checker.check_model(folded)
    images = {"images": np.random.default_rng(3).random((1, 3, 64, 64)).astype(np.float32)}
    output = model.graph.output[0].name
    np.testing.assert_array_equal(onnxruntime_outputs(folded, images)[output], onnxruntime_outputs(model, images)[output])


def test_a_shape_of_a_data_dependent_tensor_stays_and_is_named():
    """NonZero's output length depends on the data: its Shape cannot fold, and the pass says which."""
    info = helper.make_tensor_value_info
    nodes = [
        helper.make_node("NonZero", ["x"], ["where"], name="find"),
        helper.make_node("Shape", ["where"], ["count_shape"], name="count_of_nonzeros"),
        helper.make_node("Shape", ["x"], ["x_shape"], name="static_shape"),
        helper.make_node("Concat", ["count_shape", "x_shape"], ["both"], axis=0),
        helper.make_node("Cast", ["both"], ["y"], to=TensorProto.FLOAT),
    ]
    graph = helper.make_graph(nodes, "dynamic", [info("x", TensorProto.FLOAT, [2, 3])], [info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    folded, count, unfolded = fold_shape_computations(model)
    assert unfolded == ["count_of_nonzeros"]
    assert count == 1  # the static Shape; the Concat needs the dynamic one
    x = {"x": np.array([[0, 1, 2], [3, 0, 0]], np.float32)}
    np.testing.assert_array_equal(onnxruntime_outputs(folded, x)["y"], onnxruntime_outputs(model, x)["y"])


def test_an_operator_the_reference_refuses_stays_in_the_graph():
    """A Gather whose index is out of range cannot be evaluated: it is left for the importer,
    which reports the real error, instead of failing inside the folding pass."""
    info = helper.make_tensor_value_info
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "i"], ["d"], axis=0),
        helper.make_node("Cast", ["d"], ["y"], to=TensorProto.FLOAT),
    ]
    index = helper.make_tensor("i", TensorProto.INT64, [], [7])
    graph = helper.make_graph(nodes, "bad", [info("x", TensorProto.FLOAT, [2, 3])], [info("y", TensorProto.FLOAT, None)], [index])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    folded, count, unfolded = fold_shape_computations(model)
    assert count == 1 and [node.op_type for node in folded.graph.node] == ["Gather", "Cast"]
