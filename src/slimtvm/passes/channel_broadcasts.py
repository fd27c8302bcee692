"""Broadcast a one-channel map over the channels it scales: ``x[1,C,H,W] · g[1,1,H,W]`` → ``x · broadcast_to(g, [1,C,H,W])``.

Spatial gates multiply every channel of a feature map by one map of the same height and width:
FocalNet's focal modulation (``ctx · gates[:, l:l+1]``), CBAM-style spatial attention. Relax's
``ConvertLayout`` cannot put such an op into a blocked layout (NCHW16c): the one-channel operand
has no channel block, and TVM 0.27 fails on the whole module ("Cannot broadcast from 5 to 4"),
so every conv of the model stayed in NCHW on the generic schedule (a warning said so). With the
map broadcast to the channels first, the op and its operands take the blocked layout like any
other; ``broadcast_to`` fuses into the element-wise kernel that reads it, so nothing the size of
``x`` is written.

Rewrites a call of a binary broadcasting op (passes/rank_matched_constants.py) whose operands are two non-constant 4-D
tensors of static shape, one with a single channel and more than one pixel, the other with more
than one channel. Leaves everything else unchanged: constants (lowering/rank-matched constants
handle them), per-channel vectors ``[1,C,1,1]``, other ranks, shapes not known at compile time.
"""

from __future__ import annotations

import tvm
from tvm import relax

from .constants import constant_value
from .rank_matched_constants import binary_broadcast_args, with_args
from .relax_functions import rewrite_relax_functions
from .static_shapes import static_shape


def _is_one_channel_map(shape: tuple) -> bool:
    return len(shape) == 4 and shape[1] == 1 and shape[2] * shape[3] > 1


@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    def __init__(self, mod):
        super().__init__(mod)
        self.count = 0

    def visit_call_(self, call):
        call = super().visit_call_(call)
        args = binary_broadcast_args(call)
        if args is None or any(constant_value(arg) is not None for arg in args):
            return call
        shapes = [static_shape(arg) for arg in args]
        if any(shape is None or len(shape) != 4 for shape in shapes):
            return call
        for index in (0, 1):
            mine, other = shapes[index], shapes[1 - index]
            if _is_one_channel_map(mine) and other[1] > 1:
                args[index] = relax.op.broadcast_to(args[index], relax.ShapeExpr([mine[0], other[1], mine[2], mine[3]]))
                self.count += 1
                return with_args(call, args)
        return call


@tvm.transform.module_pass(opt_level=0, name="slimtvm.ChannelBroadcasts")
class ChannelBroadcasts:
    """Relax module pass: a one-channel map operand of a binary element-wise op with a many-channel
    tensor is broadcast to the channels first (see module doc); ``rewritten`` counts them."""

    def __init__(self):
        self.rewritten = 0

    def transform_module(self, mod, _ctx):
        rewriter = _Rewriter(mod)
        mod = rewrite_relax_functions(mod, rewriter)
        self.rewritten = rewriter.count
        return mod
