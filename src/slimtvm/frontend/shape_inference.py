"""ONNX shape inference without copying the weights through it.

``onnx.shape_inference.infer_shapes`` serializes the whole model, parses it in C++, infers, and
serializes and parses the result back: for VGG-19's 548 MB of weights 2.9 s a call, and a compile
made five (14 of VGG-19's 80 s). Inference reads an initializer's data only where the value is
shape arithmetic (data propagation of ``Reshape`` targets, ``Slice`` bounds, ``Expand`` shapes),
which are a few elements each; every other initializer contributes only its type and dims. So
the inference runs on a copy whose large initializers keep their name, type and dims and lose
their data, and the real initializers go back into the result.
"""

from __future__ import annotations

import onnx

# An initializer larger than this is weights, not shape arithmetic (a shape holds one value per
# axis; ``Range``/``Slice`` bounds and scalar factors are smaller still).
SHAPE_DATA_MAX_ELEMENTS = 1024


def infer_shapes(model: onnx.ModelProto, **options) -> onnx.ModelProto:
    """What ``onnx.shape_inference.infer_shapes(model, **options)`` returns (the model with the
    inferred ``value_info`` and output types), computed on :func:`weightless_copy` (see the module
    docstring). ``model`` is not changed. Raises what onnx's inference raises."""
    if not _large_initializers(model):
        return onnx.shape_inference.infer_shapes(model, **options)
    inferred = onnx.shape_inference.infer_shapes(weightless_copy(model), **options)
    # the weights back: a copy of the model (one copy of its bytes, 3× faster than appending its
    # initializers to the inferred model) with every other field of the inferred graph
    result = onnx.ModelProto()
    result.CopyFrom(model)
    for field in result.graph.DESCRIPTOR.fields:
        if field.name != "initializer":
            result.graph.ClearField(field.name)
    _copy_except(inferred.graph, "initializer", into=result.graph)
    return result


def inferred_shapes(model: onnx.ModelProto, **options) -> onnx.ModelProto:
    """onnx's shape inference on :func:`weightless_copy` of ``model``: for reading the inferred
    shapes and types, not the weights (its large initializers hold no data)."""
    return onnx.shape_inference.infer_shapes(weightless_copy(model), **options)


def weightless_copy(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose top-level initializers of more than
    :data:`SHAPE_DATA_MAX_ELEMENTS` elements keep their name, type and dims and hold no data;
    nothing else differs (subgraphs of ``If``/``Loop`` nodes are copied whole)."""
    large = _large_initializers(model)
    skeleton = _copy_except(model, "graph")
    _copy_except(model.graph, "initializer", into=skeleton.graph)
    for index, tensor in enumerate(model.graph.initializer):
        if index in large:
            skeleton.graph.initializer.add(name=tensor.name, dims=tensor.dims, data_type=tensor.data_type)
        else:
            skeleton.graph.initializer.add().CopyFrom(tensor)
    return skeleton


def _large_initializers(model: onnx.ModelProto) -> set:
    return {index for index, tensor in enumerate(model.graph.initializer) if _elements(tensor) > SHAPE_DATA_MAX_ELEMENTS}


def _copy_except(message, skipped: str, into=None):
    """A copy of the protobuf ``message`` (into ``into``, else a new one) without its field ``skipped``."""
    copy = into if into is not None else type(message)()
    for field, value in message.ListFields():
        if field.name == skipped:
            continue
        if field.is_repeated:
            getattr(copy, field.name).extend(value)
        elif field.message_type is not None:
            getattr(copy, field.name).CopyFrom(value)
        else:
            setattr(copy, field.name, value)
    return copy


def _elements(tensor: onnx.TensorProto) -> int:
    count = 1
    for dim in tensor.dims:
        count *= dim
    return count
