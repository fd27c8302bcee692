"""A kernel TOPI writes with TVM's IRBuilder (ScatterND) compiles without the code generator's
"Unknown pragma pragma_scope" warning — neither the library's kernel (lowering/scope_pragmas.py)
nor the one constant folding builds (passes/fold_constants.py) — and still matches onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
from conftest import assert_outputs_match, onnxruntime_outputs
from onnx import TensorProto, helper, numpy_helper

import slimtvm


def _scatter_model() -> onnx.ModelProto:
    """``ScatterND(Relu(x), rows, updates)`` with rows chosen by an int64 input, so that the
    scatter stays a kernel of the library, plus a mask made by a ScatterND of constants (as
    Swin's window masks are), which constant folding builds and runs at compile time."""
    updates = numpy_helper.from_array(np.arange(16, dtype=np.float32).reshape(2, 8) - 8, "updates")
    zeros = numpy_helper.from_array(np.zeros((6, 8), np.float32), "zeros")
    mask_rows = numpy_helper.from_array(np.array([[0], [5]], np.int64), "mask_rows")
    mask_values = numpy_helper.from_array(np.full((2, 8), 100.0, np.float32), "mask_values")
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["r"]),
            helper.make_node("ScatterND", ["r", "rows", "updates"], ["s"]),
            helper.make_node("ScatterND", ["zeros", "mask_rows", "mask_values"], ["mask"]),
            helper.make_node("Add", ["s", "mask"], ["y"]),
        ],
        "scatter",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6, 8]), helper.make_tensor_value_info("rows", TensorProto.INT64, [2, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [6, 8])],
        initializer=[updates, zeros, mask_rows, mask_values],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_scatter_compiles_without_pragma_warnings_and_matches_onnxruntime(tmp_path, capfd):
    model = _scatter_model()
    inputs = {"x": np.random.default_rng(0).standard_normal((6, 8)).astype(np.float32), "rows": np.array([[4], [1]], dtype=np.int64)}
    capfd.readouterr()
    artifact = slimtvm.compile(model, str(tmp_path / "scatter.so"), target="x86-64")
    logged = capfd.readouterr().err
    assert "pragma" not in logged, logged
    outputs = artifact.load().run(inputs)
    assert_outputs_match(outputs, onnxruntime_outputs(model, inputs))
    np.testing.assert_array_equal(outputs["y"][4], np.arange(8, dtype=np.float32) - 8)
