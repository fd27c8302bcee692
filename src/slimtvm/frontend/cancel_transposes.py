"""Remove pairs of layout transposes that enclose only element-wise ops and constant pads.

tf2onnx exports a Keras (NHWC) network as NCHW convolutions with ``Transpose`` nodes wherever an
op stays in NHWC; Larq's binarized convs come out as ``Transpose(NCHW→NHWC) → Sign → Add(c) →
Sign → Pad(value, NHWC) → Transpose(NHWC→NCHW) → Conv``. The ops between the two transposes act
element by element (or pad along axes), so the same ops applied before the first transpose, with
the pads permuted, compute the same values and the two transposes cancel. Exact: no value changes,
only the order of axes in which intermediate results are held.

A chain qualifies when every tensor on it has exactly one reader and is not a graph output, every
op is one of :data:`ELEMENTWISE` (with, for the two-operand ones, a constant of one element as the
other operand) or a constant-mode ``Pad`` with constant pads and value and no ``axes`` input, and
the closing transpose undoes the opening one. Anything else is left as it is.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .onnx_model import constant_arrays, readers_by_value

ELEMENTWISE = {"Sign", "Relu", "Neg", "Abs", "Identity", "Round", "Floor", "Ceil", "Tanh", "Sigmoid", "HardSigmoid", "Clip", "Add", "Sub", "Mul", "Div"}


def cancel_layout_transposes(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """(a copy of ``model`` without the cancelling transpose pairs, how many pairs were removed);
    ``model`` itself when there are none."""
    constants = constant_arrays(model.graph)
    readers = readers_by_value(model.graph)
    outputs = {value.name for value in model.graph.output}
    chains, touched = [], set()
    for node in model.graph.node:
        chain = _chain_after(node, readers, outputs, constants) if node.op_type == "Transpose" else None
        if chain and not {chain[0].output[0], chain[2].output[0]} & touched:  # a transpose closes one pair at most
            chains.append(chain)
            touched |= {chain[0].output[0], chain[2].output[0]}
    if not chains:
        return model, 0
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    graph = rewritten.graph
    by_output = {node.output[0]: node for node in graph.node if node.output}
    dropped, stale = set(), set()
    for opening, middle, closing in chains:
        perm = _perm(opening)
        first = by_output[middle[0].output[0]]
        first.input[0] = opening.input[0]
        for original in middle:
            node = by_output[original.output[0]]
            stale.add(node.output[0])
            if node.op_type == "Pad":
                node.input[1] = _permuted_pads(graph, node, constants, perm)
        last = by_output[middle[-1].output[0]]
        last.output[0] = closing.output[0]
        dropped.update({opening.output[0], closing.output[0]})
    kept = [node for node in graph.node if not (node.op_type == "Transpose" and node.output[0] in dropped)]
    del graph.node[:]
    graph.node.extend(kept)
    stale |= dropped
    value_infos = [value for value in graph.value_info if value.name not in stale]
    del graph.value_info[:]
    graph.value_info.extend(value_infos)
    return rewritten, len(chains)


def _perm(node) -> list:
    for attr in node.attribute:
        if attr.name == "perm":
            return list(attr.ints)
    return []


def _qualifies(node, constants) -> bool:
    """An op that commutes with a transpose (applied with permuted pads for Pad)."""
    if node.op_type == "Pad":
        mode = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "mode"), b"constant")
        return (
            mode == b"constant"
            and 2 <= len(node.input) <= 3
            and node.input[1] in constants
            and (len(node.input) < 3 or node.input[2] in constants or not node.input[2])
        )
    if node.op_type not in ELEMENTWISE:
        return False
    if node.op_type == "Clip" or node.op_type in ("Add", "Sub", "Mul", "Div"):
        others = node.input[1:]
        return all(not name or (name in constants and constants[name].size == 1) for name in others)
    return len(node.input) == 1


def _chain_after(opening, readers, outputs, constants):
    """(opening transpose, the ops in between, closing transpose) when they qualify, else None."""
    perm = _perm(opening)
    if not perm:
        return None
    middle, current = [], opening.output[0]
    while True:
        users = readers.get(current, [])
        if current in outputs or len(users) != 1:
            return None
        node = users[0]
        if node.input[0] != current:
            return None
        if node.op_type == "Transpose":
            closing = _perm(node)
            undone = len(closing) == len(perm) and all(perm[closing[axis]] == axis for axis in range(len(perm)))
            return (opening, middle, node) if undone and middle else None
        if not _qualifies(node, constants):
            return None
        middle.append(node)
        current = node.output[0]


def _permuted_pads(graph, node, constants, perm) -> str:
    """A new initializer with ``node``'s pads for the axes before the opening transpose."""
    pads = constants[node.input[1]].astype("int64").reshape(-1)
    rank = len(perm)
    before, after = [0] * rank, [0] * rank
    for axis in range(rank):  # axis of the transposed tensor holds axis perm[axis] of the input
        before[perm[axis]], after[perm[axis]] = int(pads[axis]), int(pads[rank + axis])
    name = f"{node.output[0]}__slimtvm_pads"
    graph.initializer.append(numpy_helper.from_array(np.array(before + after, dtype="int64"), name))
    return name
