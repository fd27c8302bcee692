"""LRN's sum over neighbouring channels as a 1×1 conv on banded weights, which the banded kernel runs
in the blocked layout (lowering/banded_layers.py).

TVM imports ONNX ``LRN`` (GoogLeNet, AlexNet, ZFNet) as ``x²`` → ``expand_dims`` to 5-D →
``avg_pool3d`` over a window of ``size`` channels (zero padded, divided by ``size``) →
``squeeze`` → scale, shift, power, divide. The 5-D reshape has no blocked form, so each LRN ran
its squares, pool and power in NCHW with a relayout on each side: light Inception v1's two LRNs
0.5 ms of pooling and 0.27 ms of relayouts in a 9.0 ms run (1 thread, Zen 5). The window sum is a
1×1 conv whose weight is ``1/size`` where ``|input channel − output channel|`` is within the
window and 0 elsewhere: per block of 16 output channels it reads 20 input channels, a band the
banded kernel reduces over, with the scale, shift, power and divide as its epilogue.

Rewrites ``squeeze(avg_pool3d(expand_dims(x, axis=1), pool_size=[k, 1, 1], strides 1, dilation 1,
padding [p, 0, 0, q, 0, 0], count_include_pad), axis=1)`` of a static float32 NCHW ``x`` into
``conv2d(x, W)``; ``weights`` lists every ``W`` it made, which the banded lowering takes as its
own (as the grouped-conv pass's block-diagonal weights). Only for targets the banded kernel
serves (x86's 8 and 16 lanes): elsewhere (NEON) the conv would run dense, C² multiply-adds per
pixel instead of the pool's C · size. The sums are the same (the products
by ``1/k`` are rounded where the pool rounded its quotient: within an ulp or two). Refuses
(leaves unchanged) any other pool, layout, dtype or shape.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from ..passes.relax_functions import rewrite_relax_functions
from .banded_layers import BANDED_LANES


def window_weight(channels: int, size: int, before: int, dtype: str = "float32") -> np.ndarray:
    """OIHW weight of the window sum: output channel ``o`` averages input channels ``o − before``
    to ``o − before + size − 1`` (those that exist), each weighted ``1 / size``."""
    weight = np.zeros((channels, channels, 1, 1), dtype=dtype)
    for out in range(channels):
        first, last = max(0, out - before), min(channels - 1, out - before + size - 1)
        weight[out, first : last + 1, 0, 0] = 1.0 / size
    return weight


def _window(pool) -> tuple | None:
    """``(size, before)`` of an ``avg_pool3d`` that sums a window of channels only, else None."""
    attrs = pool.attrs
    size = [int(v) for v in attrs.pool_size]
    padding = [int(v) for v in attrs.padding]
    if str(attrs.layout) != "NCDHW" or str(attrs.out_layout) != "NCDHW" or not bool(attrs.count_include_pad) or bool(attrs.ceil_mode):
        return None
    if size[1:] != [1, 1] or [int(v) for v in attrs.strides] != [1, 1, 1] or [int(v) for v in attrs.dilation] != [1, 1, 1]:
        return None
    if padding[1:3] != [0, 0] or padding[4:] != [0, 0] or padding[0] + padding[3] != size[0] - 1:
        return None
    return size[0], padding[0]


def _axes(call) -> list:
    return [int(v) for v in call.attrs.axis] if call.attrs.axis is not None else []


@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    def __init__(self, mod, weights: list):
        super().__init__(mod)
        self.weights = weights

    def _bound_call(self, expr, name: str):
        if isinstance(expr, relax.Var):
            expr = self.lookup_binding(expr)
        return expr if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == f"relax.{name}" else None

    def visit_call_(self, call):
        call = super().visit_call_(call)
        if getattr(call.op, "name", "") != "relax.squeeze" or _axes(call) != [1]:
            return call
        pool = self._bound_call(call.args[0], "nn.avg_pool3d")
        expand = self._bound_call(pool.args[0], "expand_dims") if pool is not None else None
        if expand is None or _axes(expand) != [1]:
            return call
        window = _window(pool)
        data = expand.args[0]
        ty = data.ty
        if window is None or not isinstance(ty, relax.TensorType) or str(ty.dtype) != "float32" or ty.shape is None or len(ty.shape) != 4:
            return call
        try:
            channels = int(ty.shape[1])
        except (TypeError, ValueError):
            return call
        weight = window_weight(channels, *window)
        self.weights.append(weight)
        return relax.op.nn.conv2d(data, relax.const(weight), data_layout="NCHW", kernel_layout="OIHW", out_dtype="float32")


@tvm.transform.module_pass(opt_level=0, name="slimtvm.ChannelWindowSums")
class ChannelWindowSums:
    """Relax module pass for a ``lanes``-wide target: LRN's channel-window pools become 1×1 convs
    on banded weights (module doc); ``weights`` holds the OIHW weights of this build's."""

    def __init__(self, lanes: int):
        self.enabled = lanes in BANDED_LANES
        self.weights: list = []

    def transform_module(self, mod, _ctx):
        self.weights = []
        if not self.enabled:
            return mod
        rewriter = _Rewriter(mod, self.weights)
        mod = rewrite_relax_functions(mod, rewriter)
        return relax.transform.DeadCodeElimination()(mod) if self.weights else mod
