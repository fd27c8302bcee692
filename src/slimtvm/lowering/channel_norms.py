"""Layer norms over the channel axis, run in the blocked layout of the convs around them.

ConvNeXt normalizes every pixel's channels (``LayerNorm`` on channels-last tensors, which
passes/channels_first.py turns into ``layer_norm(axes=[1])`` on NCHW). Relax's ``ConvertLayout``
cannot move that op into NCHW[b]c: it keeps the channel-block axis alone as the normalized one
and fails on the scale's length, and the whole conversion with it (every conv then ran on the
generic schedule). So, before the conversion, :class:`HideChannelNorms` gives each such norm a
kernel of its own in NCHW (a ``call_tir``, which the conversion leaves in NCHW with a relayout
on each side), and after it :class:`BlockedChannelNorms` replaces ``relayout → norm → relayout``
by the same norm computed on the blocked tensor: per pixel, the sums of the values and of their
squares over both channel axes, then ``(x − mean) / √(E[x²] − mean² + ε) · γ + β`` (the one-pass
formula of onnxruntime's and TOPI's layer norms).

Refuses (leaves to TVM's legalization) norms over other axes, non-float32 or dynamic shapes, and
scales or shifts that are not constants.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax, te

from ..passes.constants import constant_value
from ..passes.detect_binary import op_name
from ..passes.relax_functions import rewrite_with_builder
from .binary_thresholds import use_counts
from .channel_relayouts import channel_relayout_of

NORM_NAME = "channel_norm"


def channel_norm_nchw(data, gamma, beta, epsilon: float):
    """TE: layer norm over axis 1 of an NCHW tensor, ``gamma``/``beta`` of shape ``[C]``."""
    n, c, h, w = data.shape
    rc = te.reduce_axis((0, c), name="rc")
    rs = te.reduce_axis((0, c), name="rs")
    total = te.compute((n, h, w), lambda b, y, x: te.sum(data[b, rc, y, x], axis=rc), name="channel_sum")
    squares = te.compute((n, h, w), lambda b, y, x: te.sum(data[b, rs, y, x] * data[b, rs, y, x], axis=rs), name="channel_square_sum")
    return te.compute(
        (n, c, h, w),
        lambda b, k, y, x: _normalized(data[b, k, y, x], total[b, y, x], squares[b, y, x], c, epsilon) * gamma[k] + beta[k],
        name=NORM_NAME,
    )


def channel_norm_blocked(data, gamma, beta, epsilon: float):
    """TE: the same norm on NCHW[b]c (``[N, C/b, H, W, b]``), ``gamma``/``beta`` of shape ``[C/b, b]``:
    the sums run over the channel blocks per lane first, then over the lanes."""
    n, blocks, h, w, block = data.shape
    rb = te.reduce_axis((0, blocks), name="rb")
    rs = te.reduce_axis((0, blocks), name="rs")
    lane_sum = te.compute((n, h, w, block), lambda b, y, x, v: te.sum(data[b, rb, y, x, v], axis=rb), name="lane_sum")
    lane_squares = te.compute((n, h, w, block), lambda b, y, x, v: te.sum(data[b, rs, y, x, v] * data[b, rs, y, x, v], axis=rs), name="lane_square_sum")
    rv = te.reduce_axis((0, block), name="rv")
    rq = te.reduce_axis((0, block), name="rq")
    total = te.compute((n, h, w), lambda b, y, x: te.sum(lane_sum[b, y, x, rv], axis=rv), name="channel_sum")
    squares = te.compute((n, h, w), lambda b, y, x: te.sum(lane_squares[b, y, x, rq], axis=rq), name="channel_square_sum")
    channels = blocks * block
    return te.compute(
        (n, blocks, h, w, block),
        lambda b, k, y, x, v: _normalized(data[b, k, y, x, v], total[b, y, x], squares[b, y, x], channels, epsilon) * gamma[k, v] + beta[k, v],
        name=NORM_NAME,
    )


def _normalized(value, total, squares, channels, epsilon: float):
    mean = total / tvm.tirx.const(float(int(channels)), "float32")
    variance = squares / tvm.tirx.const(float(int(channels)), "float32") - mean * mean
    return (value - mean) / te.sqrt(variance + tvm.tirx.const(epsilon, "float32"))


def _is_channel_norm(call) -> bool:
    if op_name(call) != "relax.nn.layer_norm" or [int(axis) for axis in call.attrs.axes] not in ([1], [-3]):
        return False
    shape = getattr(call.args[0].ty, "shape", None)
    if shape is None or len(shape) != 4 or not all(isinstance(d, tvm.tirx.IntImm) for d in shape) or str(call.args[0].ty.dtype) != "float32":
        return False
    return all(constant_value(arg) is not None for arg in call.args[1:3])


@tvm.transform.module_pass(opt_level=0, name="slimtvm.HideChannelNorms")
class HideChannelNorms:
    """Before the layout conversion: each channel norm (module docstring) becomes a kernel call in
    NCHW; ``epsilons`` maps the kernels' names to their ε for :class:`BlockedChannelNorms`."""

    def __init__(self):
        self.epsilons: dict = {}

    def transform_module(self, mod, _ctx):
        rewriter = _Hider(mod, self.epsilons)
        for gvar, func in list(mod.functions.items()):
            if isinstance(func, relax.Function):
                rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
        return rewriter.builder_.get() if rewriter.count else mod


@relax.expr_functor.mutator
class _Hider(relax.PyExprMutator):
    def __init__(self, mod, epsilons: dict):
        super().__init__(mod)
        self.epsilons, self.count = epsilons, 0

    def visit_call_(self, call):
        call = super().visit_call_(call)
        if not _is_channel_norm(call):
            return call
        attrs, channels = call.attrs, int(call.args[0].ty.shape[1])
        gamma = constant_value(call.args[1]) if bool(attrs.scale) else np.ones(channels, np.float32)
        beta = constant_value(call.args[2]) if bool(attrs.center) else np.zeros(channels, np.float32)
        epsilon = float(attrs.epsilon)
        self.count += 1
        result = self.builder_.call_te(
            channel_norm_nchw,
            call.args[0],
            relax.const(gamma.reshape(-1), "float32"),
            relax.const(beta.reshape(-1), "float32"),
            epsilon,
            primfunc_name_hint=NORM_NAME,
        )
        self.epsilons[result.args[0].name_hint] = epsilon
        return result


@tvm.transform.module_pass(opt_level=0, name="slimtvm.BlockedChannelNorms")
class BlockedChannelNorms:
    """After the layout conversion: ``relayout to NCHW → channel norm → relayout to NCHW[b]c``
    (the norm's only reader) → the norm on the blocked tensor; ``count`` says how many."""

    def __init__(self, hidden: HideChannelNorms):
        self.hidden, self.count = hidden, 0

    def transform_module(self, mod, _ctx):
        if not self.hidden.epsilons:
            return mod
        rewriter = _Blocker(mod, self.hidden.epsilons)
        mod = rewrite_with_builder(mod, rewriter)
        self.count = rewriter.count
        return mod


@relax.expr_functor.mutator
class _Blocker(relax.PyExprMutator):
    def __init__(self, mod, epsilons: dict):
        super().__init__(mod)
        self.epsilons, self.count = epsilons, 0

    def start(self, func) -> None:
        self.uses = use_counts(func)
        self.values = {}

    def visit_var_binding_(self, binding):
        self.values[binding.var] = binding.value
        replaced = self._blocked(binding.value)
        if replaced is None:
            super().visit_var_binding_(binding)
            return
        self.count += 1
        self.set_var_remap(binding.var, self.builder_.emit(replaced, "channel_norm"))

    def _blocked(self, value):
        """The blocked norm for ``value`` (a relayout to NCHW[b]c of a hidden norm's result), else None."""
        if op_name(value) != "relax.layout_transform" or not isinstance(value.args[0], relax.Var):
            return None
        end = channel_relayout_of(value)
        norm = self.values.get(value.args[0])
        if end is None or not end[5] or self.uses.get(value.args[0], 0) != 1 or op_name(norm) != "relax.call_tir":
            return None
        epsilon = self.epsilons.get(norm.args[0].name_hint)
        source = norm.args[1].fields[0]
        start_call = self.values.get(source) if isinstance(source, relax.Var) else None
        if epsilon is None or op_name(start_call) != "relax.layout_transform":
            return None
        start = channel_relayout_of(start_call)
        if start is None or start[5] or start[:5] != end[:5]:
            return None
        block = end[4]
        gamma, beta = (constant_value(arg).reshape(-1, block) for arg in norm.args[1].fields[1:3])
        return self.builder_.call_te(
            channel_norm_blocked,
            self.visit_expr(start_call.args[0]),
            relax.const(gamma, "float32"),
            relax.const(beta, "float32"),
            epsilon,
            primfunc_name_hint=NORM_NAME,
        )
