"""The float layers a lossy rewrite may change: Conv, Gemm and MatMul with constant weights.

Shared by ``--binarize`` and ``--prune``: which layers there are (in graph order, with the axis of
their output channels), what ``--keep-float`` names, and a weight a layer may change without
touching another layer that shares it.
"""

from __future__ import annotations

import onnx

from ..errors import SlimError

LINEAR_OPS = ("Conv", "Gemm", "MatMul")


def attribute(node, name: str, default):
    """The value of ``node``'s attribute ``name``, or ``default`` when it has none."""
    for item in node.attribute:
        if item.name == name:
            return onnx.helper.get_attribute_value(item)
    return default


def weight_layers(model: onnx.ModelProto) -> list:
    """(node, weight initializer, output-channel axis) of each linear layer with constant weights."""
    initializers = {init.name: init for init in model.graph.initializer}
    layers = []
    for node in model.graph.node:
        if node.op_type not in LINEAR_OPS or len(node.input) < 2 or node.input[1] not in initializers:
            continue
        weight = initializers[node.input[1]]
        if node.op_type == "Conv":
            axis = 0
        elif node.op_type == "Gemm":
            axis = 0 if attribute(node, "transB", 0) else 1
        else:
            axis = len(weight.dims) - 1
        if len(weight.dims) >= 2:
            layers.append((node, weight, axis))
    return layers


def layer_name(node) -> str:
    """The name reports and ``--keep-float`` use: the node's name, else its first output."""
    return node.name or node.output[0]


def kept_layers(names: list, keep_float, flag: str = "--keep-float") -> set:
    """The names of ``names`` (graph order) that ``keep_float`` keeps: layer names, ``first``,
    ``last`` or ``none``. Refuses a name that is not one of ``names``."""
    keep = set()
    for item in keep_float:
        if item == "first":
            keep.add(names[0])
        elif item == "last":
            keep.add(names[-1])
        elif item in names:
            keep.add(item)
        elif item != "none":
            raise SlimError(
                f"{flag}: {item!r} is not a Conv/Gemm/MatMul layer with constant weights of this model (layers: {', '.join(names[:8])}{', …' if len(names) > 8 else ''})"
            )
    return keep


def own_weight(model: onnx.ModelProto, node, weight, suffix: str):
    """``node``'s weight initializer, copied under a new name first when another node reads it
    too (so that rewriting it changes this layer only)."""
    readers = sum(1 for other in model.graph.node for name in other.input if name == weight.name)
    if readers <= 1:
        return weight
    copy = model.graph.initializer.add()
    copy.CopyFrom(weight)
    copy.name = f"{node.input[1]}__{suffix}"
    node.input[1] = copy.name
    return copy
