"""Fold an ONNX graph's shape computations into constants, given static input shapes.

Exporters write a model's reshapes as arithmetic on shapes (``Shape → Gather → Unsqueeze →
Concat → Reshape``, YOLO heads; ``Shape → ConstantOfShape``, ``Range`` over a dimension) so that
the graph works for any input size. With the input shapes fixed, every such value is a
constant; TVM's ONNX importer does not always see that (it builds ``R.Shape`` values that later
operators refuse, or leaves outputs of unknown shape), so this pass evaluates them first.

What folds: ``Shape`` and ``Size`` of a tensor whose shape ONNX's inference (with data
propagation) knows completely, and every deterministic operator of the default domain whose
inputs are all constants and either at least one of them came from such a fold or all of them
are integers, booleans or a few values at most (torch's exports build masks and index tensors as
``ConstantOfShape → Equal → Where → Expand`` on constant int64 shapes, and trace
``math.ceil(h / patch)`` as ``Ceil → Mul → Cast`` on float scalars, which TVM's importer
refuses). Everything else stays (constant weight arithmetic is folded later by Relax). Operators are evaluated with onnx's own
reference implementation (``onnx.reference``), one node at a time.

Written here rather than taken from onnxslim or onnx-simplifier: both rewrite much more of the
graph than shapes (fusions, eliminations) and onnx-simplifier runs onnxruntime at compile time;
this pass must change nothing but the shape arithmetic.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .shape_inference import weightless_copy

FOLDED_MAX_ELEMENTS = 1 << 20  # a shape-derived constant larger than this stays a computation
SHAPE_LIKE_MAX_ELEMENTS = 8  # a float constant this small is shape arithmetic (one value per axis at most)
MAX_ROUNDS = 64  # folding rounds (YOLOv8n at 320 takes 5: a folded C2f split makes later shapes static)
NOT_FOLDED = {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli", "If", "Loop", "Scan"}


def static_shapes(model: onnx.ModelProto) -> dict:
    """``{value name: shape tuple}`` for every value whose shape ONNX's inference (with data
    propagation) knows in full; values with a symbolic or missing dimension are absent.

    Inference starts from the model without its partial ``value_info``: an earlier inference
    (before a fold made the shape static) wrote symbolic dimensions there, and ONNX keeps them
    over what it infers now (ConvBERT's TorchScript export: an ``Add`` of two ``[1, 40, 32]``
    tensors stayed ``[unk, 40, 32]``, its attention's reshapes unfolded, TVM's import failed)."""
    fresh = weightless_copy(model)  # inference reads no weights (frontend/shape_inference.py)
    static_infos = [info for info in fresh.graph.value_info if _static_dims(info) is not None]
    del fresh.graph.value_info[:]
    fresh.graph.value_info.extend(static_infos)
    try:
        inferred = onnx.shape_inference.infer_shapes(fresh, data_prop=True)
    except Exception:  # noqa: BLE001 - inference is best effort; the importer reports real errors
        inferred = model
    graph = inferred.graph
    shapes = {}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        dims = _static_dims(info)
        if dims is not None:
            shapes[info.name] = dims
    for initializer in graph.initializer:
        shapes[initializer.name] = tuple(initializer.dims)
    return shapes


def _static_dims(info) -> tuple | None:
    """The value's shape when every dimension is a number, else None."""
    tensor = info.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    dims = [dim.dim_value if dim.HasField("dim_value") else None for dim in tensor.shape.dim]
    return None if any(dim is None for dim in dims) else tuple(dims)


def fold_shape_computations(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int, list]:
    """The model with its shape computations replaced by initializers (see the module
    docstring), the number of nodes folded, and the names of ``Shape``/``Size`` nodes that could
    not fold (their input's shape is not static), for error messages. Returns ``model`` itself
    when nothing folds.

    Folds in rounds: a folded ``Slice`` bound or ``Reshape`` target makes the shapes after it
    static for ONNX's inference, which lets the next round fold the ``Shape`` nodes further on
    (YOLOv8's C2f blocks split channels this way, one block after the other)."""
    total, unfolded = 0, []
    for _ in range(MAX_ROUNDS):
        model, folded, unfolded = _fold_once(model)
        total += folded
        if not folded or not unfolded:
            break
    return model, total, unfolded


def _fold_once(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int, list]:
    """One round of :func:`fold_shape_computations`."""
    shapes = static_shapes(model)
    opset = next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), onnx.defs.onnx_opset_version())
    graph = model.graph
    constants = {initializer.name: numpy_helper.to_array(initializer) for initializer in graph.initializer}
    shape_derived: set = set()
    kept, folded_values, unfolded, folded_nodes = [], {}, [], 0
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            constants[node.output[0]] = _constant_value(node)
            kept.append(node)
            continue
        values = _folded(node, shapes, constants, shape_derived, opset)
        if values is None:
            if node.op_type in ("Shape", "Size"):
                unfolded.append(node.name or node.output[0])
            kept.append(node)
            continue
        folded_nodes += 1
        for name, value in zip(node.output, values):
            constants[name] = folded_values[name] = value
            shape_derived.add(name)
    if not folded_values:
        return model, 0, unfolded
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    del folded.graph.node[:]
    folded.graph.node.extend(kept)
    outputs = {info.name for info in graph.output}
    for name, value in folded_values.items():
        if name in outputs or any(name in node.input for node in kept):
            folded.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    return folded, folded_nodes, unfolded


def _constant_value(node) -> np.ndarray | None:
    try:
        from onnx.reference import ReferenceEvaluator

        return ReferenceEvaluator(node).run(None, {})[0]
    except Exception:  # noqa: BLE001 - a Constant the reference cannot read stays as it is
        return None


def _shape_like(value: np.ndarray) -> bool:
    """Integers or booleans (masks, indices), or a handful of values (a traced ``math.ceil(h /
    patch)``): arithmetic on shapes, not on weights."""
    return value.dtype.kind in "biu" or value.size <= SHAPE_LIKE_MAX_ELEMENTS


def _folded(node, shapes: dict, constants: dict, shape_derived: set, opset: int) -> list | None:
    """The node's output values when it folds, else None."""
    if node.domain not in ("", "ai.onnx") or node.op_type in NOT_FOLDED:
        return None
    if node.op_type in ("Shape", "Size"):
        shape = shapes.get(node.input[0])
        if shape is None:
            return None
        if node.op_type == "Size":
            return [np.array(int(np.prod(shape, dtype=np.int64)), np.int64)]
        attrs = {attr.name: helper.get_attribute_value(attr) for attr in node.attribute}
        start, end = attrs.get("start", 0), attrs.get("end", None)
        return [np.array(shape[start:end], np.int64)]
    inputs = [name for name in node.input if name]
    if not inputs or not all(name in constants and constants[name] is not None for name in inputs):
        return None
    if not any(name in shape_derived for name in inputs) and not all(_shape_like(constants[name]) for name in inputs):
        return None
    from onnx.reference import ReferenceEvaluator

    try:
        # what the graph computes at run time, warnings included (T5's relative positions take
        # the log of 0 and cast the −∞ before a Where discards it): nothing to tell the user
        with np.errstate(all="ignore"):
            values = ReferenceEvaluator(node, opsets={"": opset}).run(None, {name: constants[name] for name in inputs})
    except Exception:  # noqa: BLE001 - an operator the reference cannot evaluate stays in the graph
        return None
    values = [np.asarray(value) for value in values]
    if len(values) != len(node.output) or any(value.size > FOLDED_MAX_ELEMENTS for value in values):
        return None
    return values
