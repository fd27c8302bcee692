"""Run a batched model's first, activation-heavy layers one image at a time.

Kernels run layer by layer, so between two of them a batch of N keeps N images' activations: a
ResNet stem's output is 3.2 MB per image, 26 MB at batch 8, past L2 and most of L3, and every
early kernel then reads and writes memory where batch 1 stays in cache (Zen 5, 1 thread,
``benchmarks/profile_kernels.py``: per image, batch 8 ran ResNet-18's max-pool 4× and the
Winograd stem 1.6× slower than batch 1; ``benchmarks/scaling.py``: Bi-Real Net 18 1.3× and
MobileNetV2 1.17× slower per image as a whole). Later layers, whose weights outweigh their
activations, are where a batch pays (weights read once for N images), and stay batched.

The pass finds, among the first bindings of ``main`` that are per-image operations
(:data:`PER_IMAGE_OPS`, constants with no batch axis), the last point where a single tensor
carries everything forward (a block boundary) that is at least :data:`MIN_SPLIT_BYTES_PER_IMAGE`
per image and neither a Sign's output nor on an element-wise path into one (the binary lowering
fuses across those). The bindings up to it are emitted once per image, on a slice of the input,
and the N results concatenated (past :data:`MAX_PIECES` images, once per group of images).
Exact: each image meets the same operations with the same constants. Leaves the module unchanged,
and says why in its report, for batch 1, a dynamic shape, more than one input, no such point, or
a function not of the form the ONNX importer writes (one dataflow block).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from .elementwise_ops import ELEMENTWISE_OPS
from .static_shapes import static_shape

# Operations that treat each image alone and whose attributes name no batch size.
PER_IMAGE_OPS = ELEMENTWISE_OPS | {
    "relax.nn.conv2d",
    "relax.nn.silu",
    "relax.nn.max_pool2d",
    "relax.nn.avg_pool2d",
    "relax.sign",
    "relax.greater_equal",
    "relax.where",
    "relax.astype",
}
# Where to cut: the last block boundary whose tensor is at least this large per image. ResNet-18's
# stage-2 output (28 × 28 × 128 floats) is 401 KB, MobileNetV2's 28 × 28 × 144 expansion 451 KB.
# Zen 5, 2 cores, batch 8 (benchmarks/compare_builds.py, in turns): cutting there ran ResNet-18 8%,
# Bi-Real Net 18 22% and MobileNetV2 16% faster than the whole batch, at 1 and 2 threads; cutting
# one stage later (≥ 150 KB) ran ResNet-18 as fast and MobileNetV2 4–5% slower than at 384 KB.
MIN_SPLIT_BYTES_PER_IMAGE = 384 * 1024
# At most this many copies of the first layers (a bigger batch runs them in groups of images):
# each copy is lowered and fused again, and MobileNetV2 at batch 32 compiles in ~27 s with 32.
MAX_PIECES = 32


# What a binding of ``main`` may hold for :func:`_substitute` to rebuild it.
COPIED_EXPRESSIONS = (relax.Call, relax.Tuple, relax.TupleGetItem, relax.Var, relax.ShapeExpr, tvm.ir.GenericConst)


@dataclass
class SplitBatchReport:
    images: int = 0  # N when the first layers run per image, else 0
    pieces: int = 0  # copies of the first layers: N, or groups of images past MAX_PIECES
    layers_per_image: int = 0  # bindings emitted once per piece
    cut_bytes_per_image: int = 0
    why_not: str = ""

    def to_json(self) -> dict:
        return {
            "images": self.images,
            "pieces": self.pieces,
            "layers_per_image": self.layers_per_image,
            "cut_bytes_per_image": self.cut_bytes_per_image,
            "why_not": self.why_not,
        }


@tvm.transform.module_pass(opt_level=0, name="slimtvm.SplitBatch")
class SplitBatch:
    """Relax module pass: the first layers of ``main`` per image (module doc)."""

    def __init__(self) -> None:
        self.report = SplitBatchReport()

    def transform_module(self, mod, _ctx):
        self.report = SplitBatchReport()
        func = mod["main"] if "main" in [gv.name_hint for gv in mod.get_global_vars()] else None
        plan = _plan(func) if func is not None else "no main function"
        if isinstance(plan, str):
            self.report.why_not = plan
            return mod
        images, prefix, cut = plan
        mod["main"] = _split(func, images, prefix, cut)
        self.report.images, self.report.layers_per_image = images, len(prefix)
        self.report.pieces = len(_pieces(images))
        self.report.cut_bytes_per_image = _bytes_per_image(cut)
        return mod


def _bytes_per_image(var) -> int:
    shape = static_shape(var)
    return int(np.prod(shape[1:])) * np.dtype(str(var.ty.dtype)).itemsize


def _plan(func):
    """``(N, prefix bindings, cut var)``, or why not (a string)."""
    if not isinstance(func, relax.Function):
        return "not a one-input main function"
    if len(func.params) != 1:
        shapes = [static_shape(param) for param in func.params]
        if shapes and all(shape and shape[0] == 1 for shape in shapes):
            return "batch 1"  # token ids and a mask, say: nothing to split (and no line in compile's output)
        return "not a one-input main function"
    shape = static_shape(func.params[0])
    if shape is None or len(shape) != 4:
        return "the input is not a static 4-d tensor"
    images = shape[0]
    if images < 2:
        return "batch 1"
    body = func.body
    if not isinstance(body, relax.SeqExpr) or len(body.blocks) != 1 or not isinstance(body.blocks[0], relax.DataflowBlock):
        return "main is not one dataflow block"
    bindings = list(body.blocks[0].bindings)
    if not all(isinstance(binding, relax.VarBinding) for binding in bindings):
        return "main has match-cast bindings"
    if not all(isinstance(binding.value, COPIED_EXPRESSIONS) for binding in bindings):
        return "main has bindings of a kind this pass does not copy (a function or branch)"
    readers = _readers(bindings)
    last_use = {var: max(index for index, _, _ in reads) for var, reads in readers.items()}
    last_use.update({var: len(bindings) for var in relax.analysis.free_vars(body.body)})  # the output
    defined = {func.params[0]}
    live = {func.params[0]}
    best = None
    for index, binding in enumerate(bindings):
        if not _per_image(binding, defined, images):
            break
        defined.add(binding.var)
        live.add(binding.var)
        live = {var for var in live if last_use.get(var, -1) > index}
        if len(live) == 1 and binding.var in live and _bytes_per_image(binding.var) >= MIN_SPLIT_BYTES_PER_IMAGE and _binary_safe(binding, readers):
            best = index
    if best is None:
        return f"no block boundary among the first per-image layers with at least {MIN_SPLIT_BYTES_PER_IMAGE} bytes per image"
    prefix = bindings[: best + 1]
    if not any(_op_name(b.value) == "relax.nn.conv2d" for b in prefix):
        return "no conv before the cut"
    return images, prefix, prefix[-1].var


def _op_name(value) -> str:
    return getattr(getattr(value, "op", None), "name", "") if isinstance(value, relax.Call) else ""


def _per_image(binding, defined: set, images: int) -> bool:
    """Whether ``binding`` is a per-image op on batch tensors from ``defined`` and constants with
    no batch axis, with a batch-N tensor result."""
    value = binding.value
    if _op_name(value) not in PER_IMAGE_OPS or len(value.ty_args) > 0:
        return False
    shape = static_shape(binding.var)
    if shape is None or not shape or shape[0] != images:
        return False
    for position, arg in enumerate(value.args):
        if position == 1 and _op_name(value) == "relax.nn.conv2d":
            continue  # the weight: no batch axis
        if isinstance(arg, relax.Var):
            if arg not in defined:
                return False
        elif isinstance(arg, tvm.ir.GenericConst):  # a constant: broadcast over the batch, not per image
            constant_shape = static_shape(arg)
            if constant_shape is not None and len(constant_shape) == len(shape) and constant_shape[0] != 1:
                return False
        elif isinstance(arg, relax.Call | relax.Tuple | relax.TupleGetItem | relax.Function):
            return False
    return True


def _readers(bindings: list) -> dict:
    """var → ``(binding index, operation name, result var)`` of every binding that reads it."""
    readers = {}
    for index, binding in enumerate(bindings):
        for var in relax.analysis.free_vars(binding.value):
            readers.setdefault(var, []).append((index, _op_name(binding.value), binding.var))
    return readers


def _binary_safe(binding, readers: dict) -> bool:
    """Whether a cut at ``binding`` leaves the binary lowering's pairs whole: not a Sign's output
    (packed bits between binary layers), nor a tensor that only element-wise steps lead to a Sign
    (a batch norm's scale and shift, which the lowering fuses with the Sign into a threshold)."""
    if _op_name(binding.value) == "relax.sign":
        return False
    current = binding.var
    while len(readers.get(current, [])) == 1:
        _, op, current = readers[current][0]
        if op == "relax.sign":
            return False
        if op not in ELEMENTWISE_OPS:
            return True
    return True


def _split(func, images: int, prefix: list, cut):
    """``func`` with ``prefix`` emitted once per image and its ``cut`` results concatenated."""
    source = func.params[0]
    builder = relax.BlockBuilder()
    with builder.function("main", [source], attrs=dict(func.attrs) if func.attrs else None, pure=func.is_pure):
        with builder.dataflow():
            pieces = []
            for start, end in _pieces(images):
                mapping = {source: builder.emit(relax.op.strided_slice(source, axes=[0], begin=[start], end=[end]))}
                for binding in prefix:
                    mapping[binding.var] = builder.emit(_substitute(binding.value, mapping))
                pieces.append(mapping[cut])
            mapping = {cut: builder.emit(relax.op.concat(pieces, axis=0))}
            for binding in func.body.blocks[0].bindings[len(prefix) :]:
                mapping[binding.var] = builder.emit(_substitute(binding.value, mapping))
            output = builder.emit_output(_substitute(func.body.body, mapping))
        builder.emit_func_output(output)
    return builder.get()["main"]


def _pieces(images: int) -> list:
    """``(start, end)`` of each slice of the batch: single images, or up to :data:`MAX_PIECES`
    groups of equal size (the last one smaller)."""
    size = -(-images // MAX_PIECES)
    return [(start, min(start + size, images)) for start in range(0, images, size)]


def _substitute(expr, mapping: dict):
    """``expr`` with the variables in ``mapping`` replaced (calls, tuples and their items)."""
    if isinstance(expr, relax.Var):
        return mapping.get(expr, expr)
    if isinstance(expr, relax.Call):
        return relax.Call(expr.op, [_substitute(arg, mapping) for arg in expr.args], expr.attrs, expr.ty_args)
    if isinstance(expr, relax.Tuple):
        return relax.Tuple([_substitute(field_, mapping) for field_ in expr.fields])
    if isinstance(expr, relax.TupleGetItem):
        return relax.TupleGetItem(_substitute(expr.tuple_value, mapping), expr.index)
    return expr
