"""One-dimensional convolutions as two-dimensional ones on a height-1 image.

Speech and audio encoders (Whisper's two input convs, wav2vec2's feature extractor and its
grouped positional conv) are ``Conv`` on ``[N, C, L]``, which TVM's generic schedule ran at 3.5–5.5×
onnxruntime's time (slimtvm's conv kernels take 2-D convs only). ``conv1d(x, w)`` is exactly
``conv2d(x[:, :, None, :], w[:, :, None, :])[:, :, 0, :]``: the same sums in the same order, the
kernel, strides, dilations and pads on the width axis, none on the height. The unsqueezes and
the squeeze are views; a constant weight's unsqueeze folds away.

Rewritten: every default-domain ``Conv`` whose data is rank 3 (known from ``kernel_shape``, a
constant weight of rank 3, or the data's inferred shape), ``auto_pad`` unset. ``ConvTranspose``
and pools stay as they are.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .fold_shapes import static_shapes
from .onnx_model import constant_arrays


def conv1d_as_conv2d(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """(a copy of ``model`` with its 1-D convs as 2-D ones, how many), or ``model`` itself and 0."""
    constants = constant_arrays(model.graph)
    shapes = {}
    if any(node.op_type == "Conv" and _attribute(node, "kernel_shape") is None and node.input[1] not in constants for node in model.graph.node):
        shapes = static_shapes(model)  # ONNX's shape inference, only where neither attribute nor weight tells
    if not any(_is_conv1d(node, constants, shapes) for node in model.graph.node):
        return model, 0
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    graph = rewritten.graph
    opset = next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), 1)
    axis_name = "slimtvm_conv1d_height_axis"
    graph.initializer.append(numpy_helper.from_array(np.array([2], np.int64), axis_name))
    nodes, count = [], 0
    for node in graph.node:
        if not _is_conv1d(node, constants, shapes):
            nodes.append(node)
            continue
        count += 1
        prefix = f"{node.name or node.output[0]}__slimtvm_2d"
        data, weight = f"{prefix}_data", f"{prefix}_weight"
        nodes.append(_unsqueeze_or_squeeze("Unsqueeze", node.input[0], data, axis_name, opset))
        nodes.append(_unsqueeze_or_squeeze("Unsqueeze", node.input[1], weight, axis_name, opset))
        conv = helper.make_node("Conv", [data, weight, *node.input[2:]], [f"{prefix}_out"], name=prefix)
        conv.attribute.extend(_attributes_2d(node))
        nodes.append(conv)
        nodes.append(_unsqueeze_or_squeeze("Squeeze", f"{prefix}_out", node.output[0], axis_name, opset))
    del graph.node[:]
    graph.node.extend(nodes)
    return rewritten, count


def _attribute(node, name, default=None):
    return next((helper.get_attribute_value(attr) for attr in node.attribute if attr.name == name), default)


def _is_conv1d(node, constants: dict, shapes: dict) -> bool:
    if node.op_type != "Conv" or node.domain not in ("", "ai.onnx") or _attribute(node, "auto_pad", b"NOTSET") != b"NOTSET":
        return False
    kernel = _attribute(node, "kernel_shape")
    if kernel is not None:
        return len(kernel) == 1
    if node.input[1] in constants:
        return constants[node.input[1]].ndim == 3
    shape = shapes.get(node.input[0])
    return shape is not None and len(shape) == 3


def _attributes_2d(node) -> list:
    """The conv's attributes for the height-1 image: unit kernel, stride, dilation and no pad
    on the height."""
    kept = []
    for attr in node.attribute:
        value = helper.get_attribute_value(attr)
        if attr.name in ("kernel_shape", "strides", "dilations"):
            kept.append(helper.make_attribute(attr.name, [1, *value]))
        elif attr.name == "pads":
            kept.append(helper.make_attribute("pads", [0, value[0], 0, value[1]]))
        else:
            kept.append(attr)
    return kept


def _unsqueeze_or_squeeze(op: str, source: str, target: str, axes: str, opset: int):
    if opset >= 13:
        return helper.make_node(op, [source, axes], [target], name=target)
    return helper.make_node(op, [source], [target], name=target, axes=[2])
