"""Whole SIMD vectors of columns for matmuls of two activations (an attention's ``q · kᵀ``).

The dense kernel's GEMM form (schedules/dense.py) vectorizes a matmul's columns; columns that
end in a partial vector make TVM give up the vectors of the whole kernel (a predicate on the
lanes), which ran DeiT-Tiny's ``q · kᵀ`` (197 keys) at 2 G multiply-adds/s, 72% of the model's
time. A constant weight gets zero columns in passes/pad_channels.py; here the other operand is
an activation, so it is padded with zero columns as it is produced (the pad fuses into the
transpose that makes ``kᵀ``), the product runs on whole vectors, and a slice gives the original
columns back to the ops after it. Exact: the original columns are the same sums.

An attention — ``softmax(q · kᵀ ∘ scalar ops, axis=-1) · v``, each value read once — runs on the
padded keys throughout instead: ``kᵀ`` gets zero columns and ``v`` zero rows, the scores of the
padded keys are set to −∞ right before the softmax (an added constant row, fused into the
product's epilogue), so the softmax gives them exactly 0 (its exponential flushes to zero below
−88) and the padded rows of ``v`` add nothing; the softmax and both products run on whole
vectors, with no slice in between. Exact as well: the same sums, with exact zeros added. The
ops allowed between product and softmax keep a padded score finite, so −∞ stays −∞: multiply or
divide by, add or subtract a finite scalar constant, a tensor of one value per key broadcast
over the rows (an attention mask, also one computed from an input), or a constant of one value
per score (a bias, torch's folded ``Where(mask, 0, −∞)``) — tensors padded with zeros, ones for
a divisor; the score is never a divisor. Between softmax and ``· v`` torch's scaled dot-product
attention exports a guard for fully masked rows, ``where(isnan(p), c, p)``: kept, on the padded
weights (a padded weight is 0, never NaN, so it stays 0).

Refuses (leaves as they are) matmuls with a constant right operand, dynamic or non-float32
shapes, columns that are whole vectors already or fewer than one vector, and products with
fewer rows than the GEMM form takes (:data:`~slimtvm.schedules.dense.GEMM_MIN_ROWS`) and no batch
axes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from ..passes.constants import constant_value
from ..passes.detect_binary import op_name
from ..passes.relax_functions import rewrite_with_builder
from ..passes.static_shapes import static_shape
from ..schedules.dense import GEMM_MIN_ROWS
from .binary_thresholds import use_counts

SCORE_OPS_EITHER_SIDE = {"relax.multiply", "relax.add"}  # the score may be either operand
SCORE_OPS_SCORE_FIRST = {"relax.divide", "relax.subtract"}  # the score must be the left operand


def padded_columns(call, lanes: int) -> int | None:
    """The column count (a multiple of ``lanes``) a matmul of two activations should run with,
    or None when the module docstring's rule leaves it alone."""
    if op_name(call) != "relax.matmul" or constant_value(call.args[1]) is not None:
        return None
    left, right = (static_shape(arg, "float32") for arg in call.args)
    if left is None or right is None or len(left) < 2 or len(right) < 2:
        return None
    columns = right[-1]
    if columns % lanes == 0 or columns < lanes:
        return None
    if len(left) == 2 and left[0] < GEMM_MIN_ROWS:
        return None
    return -(-columns // lanes) * lanes


@dataclass
class Attention:
    """``softmax(ops(scores), axis=-1) · v`` with ``scores = q · kᵀ`` (module docstring); the
    calls as bound in the original function."""

    scores: relax.Call  # matmul(q, kᵀ)
    score_ops: list  # (call, position of the score among its operands) between the scores and the softmax, in order
    softmax: relax.Call
    nan_guard: relax.Call | None  # where(isnan(softmax), c, softmax) before the product, or None
    product: relax.Call  # matmul(softmax, v)
    keys: int
    padded_keys: int


def _operand_kind(call, score_var, keys: int) -> str | None:
    """How ``call`` combines ``score_var`` with its other operand, when it keeps a padded score
    finite (module docstring): ``"scalar"`` (a finite scalar constant), ``"keys"`` (a tensor of
    one value per key, broadcast over the rows: an attention mask, constant or computed — or a
    constant of one value per score — padded with zeros, ones for a divisor, like the keys), or
    None. Non-finite values in a tensor are allowed: the padded entries are slimtvm's own."""
    name = op_name(call)
    if name not in SCORE_OPS_EITHER_SIDE | SCORE_OPS_SCORE_FIRST or len(call.args) != 2:
        return None
    positions = [i for i, arg in enumerate(call.args) if arg.same_as(score_var)]
    if len(positions) != 1 or (name in SCORE_OPS_SCORE_FIRST and positions != [0]):
        return None
    other = call.args[1 - positions[0]]
    value = constant_value(other)
    if value is not None and np.size(value) == 1:
        return "scalar" if np.isfinite(value).all() else None
    shape, out = static_shape(other, "float32"), static_shape(call, "float32")
    if shape is None or out is None or shape[-1:] != [keys] or out != static_shape(score_var, "float32"):
        return None
    if value is None and math.prod(shape) >= math.prod(out):
        return None  # an activation as large as the scores: which operand is the score is not known here
    return "keys"


def find_attentions(func: relax.Function, lanes: int) -> list[Attention]:
    """Every attention of the module docstring in ``func`` whose keys are not whole vectors."""
    bound = {binding.var: binding.value for block in func.body.blocks for binding in block.bindings}
    uses = use_counts(func)
    found = []
    for value in bound.values():
        if op_name(value) != "relax.matmul" or not isinstance(value.args[0], relax.Var):
            continue
        weights_var, nan_guard = value.args[0], _nan_guard(bound, uses, value.args[0])
        if nan_guard is not None:
            weights_var = nan_guard.args[2]
        softmax = bound.get(weights_var)
        if op_name(softmax) != "relax.nn.softmax" or int(softmax.attrs.axis) not in (-1, len(softmax.ty.shape) - 1):
            continue
        if uses.get(weights_var) != (1 if nan_guard is None else 2) or uses.get(value.args[0]) != 1:
            continue
        chain, var, scores = [], softmax.args[0], None
        keys = (static_shape(softmax.args[0], "float32") or [0])[-1]
        while isinstance(var, relax.Var) and uses.get(var) == 1 and var in bound:
            call = bound[var]
            if op_name(call) == "relax.matmul":
                scores = call
                break
            # the score is the operand of the call's own shape; the other is smaller or a scalar
            same = [
                i
                for i, arg in enumerate(getattr(call, "args", []))
                if isinstance(arg, relax.Var) and static_shape(arg, "float32") == static_shape(call, "float32")
            ]
            if len(same) != 1 or _operand_kind(call, call.args[same[0]], keys) is None:
                break
            chain.insert(0, (call, same[0]))
            var = call.args[same[0]]
        if scores is None:
            continue
        padded = padded_columns(scores, lanes)
        values = static_shape(value.args[1], "float32")
        if padded is None or values is None or len(values) < 2 or values[-2] != int(scores.args[1].ty.shape[-1]):
            continue
        found.append(Attention(scores, chain, softmax, nan_guard, value, int(scores.args[1].ty.shape[-1]), padded))
    return found


def _nan_guard(bound: dict, uses: dict, var) -> relax.Call | None:
    """The ``where(isnan(p), c, p)`` bound to ``var`` (``c`` a scalar constant, the ``isnan``
    used once), or None."""
    call = bound.get(var)
    if op_name(call) != "relax.where" or not all(isinstance(arg, relax.Var) for arg in (call.args[0], call.args[2])):
        return None
    condition = bound.get(call.args[0])
    value = constant_value(call.args[1])
    if op_name(condition) != "relax.isnan" or not condition.args[0].same_as(call.args[2]) or uses.get(call.args[0]) != 1:
        return None
    return call if value is not None and np.size(value) == 1 else None


@relax.expr_functor.mutator
class _PadColumns(relax.PyExprMutator):
    def __init__(self, mod, lanes: int):
        super().__init__(mod)  # the builder starts from the module: its kernels (sparse, binary) stay
        self.lanes = lanes
        self.count = 0
        self.attentions = 0
        self._products: list = []
        self._scores: list = []

    def start(self, func) -> None:
        found = find_attentions(func, self.lanes)
        self._products = [(attention.product, attention) for attention in found]
        self._scores = [attention.scores for attention in found]

    def visit_call_(self, call):
        attention = next((a for product, a in self._products if product.same_as(call)), None)
        if attention is not None:
            return self._padded_attention(attention)
        if any(scores.same_as(call) for scores in self._scores):
            return super().visit_call_(call)  # rebuilt with its attention; this copy is dead code
        call = super().visit_call_(call)
        padded = padded_columns(call, self.lanes)
        if padded is None:
            return call
        left, right = call.args
        columns = int(right.ty.shape[-1])
        wide = self.builder_.emit(relax.op.nn.pad(right, _pad_last(right, 1, padded - columns)))
        product = self.builder_.emit(relax.op.matmul(left, wide, out_dtype="float32"))
        self.count += 1
        return relax.op.strided_slice(product, axes=[-1], begin=[0], end=[columns])

    def _padded_attention(self, attention: Attention):
        extra = attention.padded_keys - attention.keys
        queries, keys_t = (self.visit_expr(arg) for arg in attention.scores.args)
        values = self.visit_expr(attention.product.args[1])
        scores = self.builder_.emit(relax.op.matmul(queries, self.builder_.emit(relax.op.nn.pad(keys_t, _pad_last(keys_t, 1, extra))), out_dtype="float32"))
        for call, position in attention.score_ops:
            args = list(call.args)
            args[position] = scores
            other = call.args[1 - position]
            value = constant_value(other)
            fill = 1.0 if op_name(call) == "relax.divide" else 0.0
            if value is not None and np.size(value) != 1:  # a constant per key or per score: padded like the keys
                widths = [(0, 0)] * (value.ndim - 1) + [(0, extra)]
                args[1 - position] = relax.const(np.pad(value, widths, constant_values=fill).astype(value.dtype))
            elif value is None:  # one value per key from an activation: padded in the graph
                args[1 - position] = self.builder_.emit(relax.op.nn.pad(self.visit_expr(other), _pad_last(other, 1, extra), pad_value=fill))
            scores = self.builder_.emit(relax.Call(call.op, args, call.attrs, call.ty_args))
        mask = np.zeros(attention.padded_keys, np.float32)
        mask[attention.keys :] = -np.inf
        scores = self.builder_.emit(relax.op.add(scores, relax.const(mask)))
        weights = self.builder_.emit(relax.op.nn.softmax(scores, axis=-1))
        if attention.nan_guard is not None:
            guard = attention.nan_guard
            weights = self.builder_.emit(relax.op.where(self.builder_.emit(relax.op.isnan(weights)), guard.args[1], weights))
        values = self.builder_.emit(relax.op.nn.pad(values, _pad_last(values, 2, extra)))
        self.count += 1
        self.attentions += 1
        return relax.op.matmul(weights, values, out_dtype="float32")


def _pad_last(expr, axis_from_end: int, extra: int) -> list[int]:
    """``relax.op.nn.pad`` widths: ``extra`` zeros after the ``axis_from_end``-th last axis."""
    widths = [0] * (2 * len(expr.ty.shape))
    widths[-2 * axis_from_end + 1] = extra
    return widths


@tvm.transform.module_pass(opt_level=0, name="slimtvm.PadMatmulColumns")
class PadMatmulColumns:
    """The module pass of the module docstring for ``lanes``-wide fp32 vectors; ``attentions``
    and ``products`` say how many attentions ran on padded keys and how many other matmuls on
    padded columns."""

    def __init__(self, lanes: int):
        self.lanes = lanes
        self.attentions = 0
        self.products = 0

    def transform_module(self, mod, _ctx):
        rewriter = _PadColumns(mod, self.lanes)
        mod = rewrite_with_builder(mod, rewriter)
        self.attentions, self.products = rewriter.attentions, rewriter.count - rewriter.attentions
        return mod
