"""Merge an explicit zero ``Pad`` in front of a ``Conv`` into the conv's own padding.

PyTorch's TorchScript exporter writes TensorFlow-style "same" padding (Hugging Face's
MobileNetV2, EfficientNet ports) as a ``Pad`` node before every conv, its widths computed from
shapes (folded to constants by fold_shapes.py). Imported as it is, each pad is a separate kernel
and a separate tensor, and the conv after it reads a padded copy: HF's MobileNetV2 ran 1.9× the
time of the same network exported by torch's dynamo exporter, which writes the widths into the
conv. A conv pads with zeros, so ``Conv(Pad(x, zeros on the spatial axes))`` is exactly
``Conv(x)`` with the widths added to its ``pads``.

Merged: a constant-mode ``Pad`` of value 0 (or none), with constant non-negative widths, none on
the batch and channel axes and no ``axes`` input, whose output is read by convs only (as their
data, ``auto_pad`` unset) and is not a graph output. Anything else stays.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from .onnx_model import constant_arrays, readers_by_value


def merge_pads_into_convs(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """(a copy of ``model`` with the module docstring's pads merged, how many were merged);
    ``model`` itself when there are none."""
    constants = constant_arrays(model.graph)
    readers = readers_by_value(model.graph)
    outputs = {value.name for value in model.graph.output}
    merged = {}
    for node in model.graph.node:
        widths = _spatial_widths(node, constants)
        users = readers.get(node.output[0], []) if widths is not None else []
        if not users or node.output[0] in outputs or not all(_takes_pads(user, node.output[0], len(widths) // 2) for user in users):
            continue
        merged[node.output[0]] = (node.input[0], widths)
    if not merged:
        return model, 0
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    graph = rewritten.graph
    kept = []
    for node in graph.node:
        if node.op_type == "Pad" and node.output[0] in merged:
            continue
        if node.op_type == "Conv" and node.input[0] in merged:
            source, widths = merged[node.input[0]]
            node.input[0] = source
            _add_pads(node, widths)
        kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    value_infos = [value for value in graph.value_info if value.name not in merged]
    del graph.value_info[:]
    graph.value_info.extend(value_infos)
    return rewritten, len(merged)


def _attribute(node, name, default=None):
    return next((helper.get_attribute_value(attr) for attr in node.attribute if attr.name == name), default)


def _spatial_widths(node, constants) -> list | None:
    """A zero ``Pad``'s widths on the spatial axes, in ``Conv``'s order (all begins, then all
    ends), when the module docstring lets it merge; else None."""
    if node.op_type != "Pad" or node.domain not in ("", "ai.onnx") or _attribute(node, "mode", b"constant") != b"constant":
        return None
    if len(node.input) > 3 and node.input[3]:
        return None  # an axes input
    if len(node.input) >= 2 and node.input[1]:  # opset ≥ 11: pads (and value) are inputs
        if node.input[1] not in constants:
            return None
        pads = constants[node.input[1]]
        value = constants.get(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(())
    else:  # opset 2: attributes
        pads, value = _attribute(node, "pads"), np.array(_attribute(node, "value", 0.0))
    if pads is None or value is None or np.size(value) != 1 or float(np.asarray(value).reshape(())) != 0.0:
        return None
    pads = [int(width) for width in np.asarray(pads).reshape(-1)]
    rank = len(pads) // 2
    if rank < 3 or min(pads) < 0 or any(pads[axis] or pads[rank + axis] for axis in (0, 1)):
        return None
    return pads[2:rank] + pads[rank + 2 :]


def _takes_pads(node, name: str, spatial: int) -> bool:
    """``node`` is a conv reading ``name`` as its data, with explicit (or no) pads."""
    auto_pad = _attribute(node, "auto_pad", b"NOTSET")
    return (
        node.op_type == "Conv"
        and node.domain in ("", "ai.onnx")
        and node.input[0] == name
        and list(node.input[1:]).count(name) == 0
        and auto_pad == b"NOTSET"
        and spatial > 0
    )


def _add_pads(node, widths: list) -> None:
    pads = list(_attribute(node, "pads", [0] * len(widths)))
    total = [int(a) + int(b) for a, b in zip(pads, widths)]
    for attr in list(node.attribute):
        if attr.name == "pads":
            node.attribute.remove(attr)
    node.attribute.append(helper.make_attribute("pads", total))
