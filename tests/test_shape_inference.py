"""Shape inference on a copy without the weights' bytes gives what onnx's own inference gives."""

from __future__ import annotations

import os

import onnx
import pytest
from detector_graphs import yolo_like_detector
from light_zoo import LIGHT, with_random_weights

from slimtvm.frontend.shape_inference import SHAPE_DATA_MAX_ELEMENTS, infer_shapes, inferred_shapes, weightless_copy


def _squeezenet():
    return with_random_weights(onnx.load(os.path.join(LIGHT, "light_squeezenet.onnx")), seed=1)  # weights as initializers


def _models():
    yield "squeezenet", _squeezenet()
    # Reshape targets and Slice bounds computed from Shape: inference propagates their data
    yield "yolo-like detector", yolo_like_detector(seed=1)


@pytest.mark.parametrize("name,model", list(_models()), ids=lambda value: value if isinstance(value, str) else "")
@pytest.mark.parametrize("data_prop", [False, True])
def test_inference_without_the_weights_equals_onnxs_and_keeps_the_weights(name, model, data_prop):
    before = model.SerializeToString(deterministic=True)
    expected = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=data_prop)
    got = infer_shapes(model, strict_mode=False, data_prop=data_prop)
    assert got.SerializeToString(deterministic=True) == expected.SerializeToString(deterministic=True)
    assert model.SerializeToString(deterministic=True) == before  # the argument is not changed
    shapes_only = inferred_shapes(model, strict_mode=False, data_prop=data_prop)
    assert list(shapes_only.graph.value_info) == list(expected.graph.value_info)
    assert list(shapes_only.graph.output) == list(expected.graph.output)


def test_the_weightless_copy_drops_only_large_initializers_data():
    model = _squeezenet()
    copy = weightless_copy(model)
    large = [tensor.name for tensor in model.graph.initializer if onnx.numpy_helper.to_array(tensor).size > SHAPE_DATA_MAX_ELEMENTS]
    assert large and len(copy.SerializeToString()) < len(model.SerializeToString()) / 10
    for original, stripped in zip(model.graph.initializer, copy.graph.initializer):
        assert (original.name, list(original.dims), original.data_type) == (stripped.name, list(stripped.dims), stripped.data_type)
        if original.name not in large:
            assert original == stripped
    assert list(copy.graph.node) == list(model.graph.node)
