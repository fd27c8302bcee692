"""Recognise binarized layers exactly: ``conv2d(sign(x), W)`` / ``matmul(sign(x), W)`` with two-valued weights.

Runs after constant folding, so weights that the ONNX export binarizes in the graph (Abs →
ReduceMean → Sign → Mul on float weights) are constants by now. A layer qualifies when its input
is ``relax.sign(x)`` and, for every output channel ``c``, every weight is ``+α_c`` or ``−α_c``
with ``α_c > 0`` (compared exactly: ``α · sign(w)`` is exact in floating point). Batch norm folded
into such a conv scales each channel by ``s_c``, which keeps it two-valued (a negative ``s_c``
flips the signs, which the packed bits record).

Such a layer becomes slimtvm's bitserial kernel (schedules/bitserial.py): activations and
weights packed 32 channels to a word, XNOR + popcount, then one multiply by ``α_c``. It computes
what the ONNX model computes except where an activation is exactly 0: ONNX's Sign(0) is 0, here
it is +1. Layers fed by Sign whose weights are not two-valued stay float, and the report says why.
Refuses nothing; a model without binarized layers is returned unchanged.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from ..schedules.bitserial import WORD_BITS, binary_conv2d_nchw, binary_dense, words_for
from .constants import constant_value


@dataclass
class BinarizeReport:
    binary_convs: int = 0
    binary_dense: int = 0
    stayed_float: Counter = field(default_factory=Counter)  # reason -> count

    def to_json(self) -> dict:
        return {"binary_convs": self.binary_convs, "binary_dense": self.binary_dense, "stayed_float_because": dict(self.stayed_float)}


def two_valued_scale(weight: np.ndarray, channel_axis: int):
    """α per output channel if every weight of that channel is ±α with α > 0, else (None, reason)."""
    moved = np.moveaxis(weight, channel_axis, 0).reshape(weight.shape[channel_axis], -1)
    alpha = np.abs(moved[:, 0])
    if not np.all(alpha > 0):
        return None, "an output channel has a zero weight"
    if not np.all(np.abs(moved) == alpha[:, None]):
        return None, "weights take more than two values (±α) per output channel"
    return alpha.astype(np.float32), None


def pack_weight_signs(weight_rows: np.ndarray) -> np.ndarray:
    """Rows of weights [rows, channels] → uint32 words [rows, words]: bit b of word w is
    ``weight[:, 32w + b] > 0``; bits past the last channel are 0."""
    rows, channels = weight_rows.shape
    bits = np.zeros((rows, words_for(channels) * WORD_BITS), dtype=np.uint64)
    bits[:, :channels] = weight_rows > 0
    shifts = np.arange(WORD_BITS, dtype=np.uint64)
    return (bits.reshape(rows, -1, WORD_BITS) << shifts).sum(axis=2).astype(np.uint32)


@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    def __init__(self, mod, report: BinarizeReport):
        super().__init__(mod)
        self.report = report

    def _sign_input(self, expr):
        """``x`` if ``expr`` is (bound to) ``relax.sign(x)``, else None."""
        if isinstance(expr, relax.Var):
            bound = self.lookup_binding(expr)
            expr = bound if bound is not None else expr
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.sign":
            return expr.args[0]
        return None

    def visit_call_(self, call):
        call = super().visit_call_(call)
        name = getattr(call.op, "name", "")
        if name not in ("relax.nn.conv2d", "relax.matmul"):
            return call
        source = self._sign_input(call.args[0])
        if source is None:
            return call
        weight = constant_value(call.args[1])
        if weight is None:
            self.report.stayed_float["weights are not constants"] += 1
            return call
        return self._conv(call, source, weight) if name == "relax.nn.conv2d" else self._dense(call, source, weight)

    def _conv(self, call, source, weight):
        attrs = call.attrs
        if (attrs.data_layout, attrs.kernel_layout, attrs.out_layout) != ("NCHW", "OIHW", "NCHW") or weight.ndim != 4:
            self.report.stayed_float["conv layout is not NCHW/OIHW"] += 1
            return call
        alpha, reason = two_valued_scale(weight, 0)
        if alpha is None:
            self.report.stayed_float[reason] += 1
            return call
        out_channels, per_group, kh, kw = weight.shape
        rows = np.transpose(weight, (0, 2, 3, 1)).reshape(-1, per_group)  # [O·KH·KW, C/g]
        packed = pack_weight_signs(rows).reshape(out_channels, kh, kw, -1).transpose(0, 3, 1, 2).copy()
        self.report.binary_convs += 1
        return self.builder_.call_te(
            binary_conv2d_nchw,
            source,
            relax.const(packed, "uint32"),
            relax.const(alpha, "float32"),
            per_group,
            [int(v) for v in attrs.strides],
            [int(v) for v in attrs.padding],
            [int(v) for v in attrs.dilation],
            int(attrs.groups),
            primfunc_name_hint="binary_conv2d",
        )

    def _dense(self, call, source, weight):
        if weight.ndim != 2 or len(call.args[0].ty.shape) != 2:
            self.report.stayed_float["matmul is not 2-D"] += 1
            return call
        alpha, reason = two_valued_scale(weight, 1)  # weight [K, N]: output channels on axis 1
        if alpha is None:
            self.report.stayed_float[reason] += 1
            return call
        self.report.binary_dense += 1
        return self.builder_.call_te(
            binary_dense,
            source,
            relax.const(pack_weight_signs(weight.T), "uint32"),
            relax.const(alpha, "float32"),
            int(weight.shape[0]),
            primfunc_name_hint="binary_dense",
        )


@tvm.transform.module_pass(opt_level=0, name="slimtvm.DetectBinaryLayers")
class DetectBinaryLayers:
    """Relax module pass: binarized conv2d/matmul layers become bitserial kernels (see module doc)."""

    def __init__(self):
        self.report = BinarizeReport()

    def transform_module(self, mod, _ctx):
        self.report = BinarizeReport()
        rewriter = _Rewriter(mod, self.report)
        for gvar, func in list(mod.functions.items()):
            if isinstance(func, relax.Function):
                rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
        mod = rewriter.builder_.get()
        if self.report.binary_convs or self.report.binary_dense:
            mod = relax.transform.DeadCodeElimination()(mod)
        return mod
