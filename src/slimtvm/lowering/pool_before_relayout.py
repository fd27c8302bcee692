"""A global mean over the pixels of a relayout to plain NCHW runs on the blocked tensor before it.

Where a conv's output channels are padded to whole blocks (SqueezeNet's 1000-class conv runs on
1008 channels, lowering/pad_channels.py), the layout conversion leaves the global average pool
after it in the plain layout: the whole image relayouted to NCHW, sliced back to 1000 channels,
then averaged — three kernels over the image, where onnxruntime runs one. This pass computes the
mean on the blocked tensor and moves the relayout and the slice after it, where they carry one
value per channel. Each output is the same sum over the same pixels, divided by the same count:
exact up to the order of the additions.
"""

from __future__ import annotations

import tvm
from tvm import relax

from .relayouts import op_name, rank, same_channels, to_plain

PIXEL_AXES = (2, 3)


def _static_shape(expr) -> list | None:
    try:
        return [int(v) for v in expr.ty.shape]
    except (TypeError, ValueError, AttributeError):  # symbolic or unknown dimensions
        return None


def _is_relayout_to_plain(call) -> bool:
    """Whether ``call`` relayouts a 5-D NCHW[b]c tensor to 4-D NCHW (padded channels kept)."""
    if op_name(call) != "relax.layout_transform" or rank(call.args[0]) != 5 or rank(call) != 4 or not same_channels(call.args[0], call):
        return False
    block = _static_shape(call.args[0])[4]
    mapped = [int(v) for v in call.attrs.index_map.map_indices([tvm.tirx.IntImm("int64", v) for v in (1, 2, 3, 4, 5)])]
    return mapped == [1, 2 * block + 5, 3, 4]


@relax.expr_functor.mutator
class _PoolFirst(relax.PyExprMutator):
    """``mean(slice?(to_plain(x)), axis=[2, 3])`` → ``slice?(to_plain(mean(x, axis=[2, 3])))``."""

    def __init__(self, mod):
        super().__init__(mod)
        self.moved = 0

    def _bound(self, expr):
        return self.lookup_binding(expr) if isinstance(expr, relax.Var) else None

    def visit_call_(self, call):
        call = super().visit_call_(call)
        if op_name(call) != "relax.mean" or rank(call.args[0]) != 4 or call.attrs.axis is None:
            return call
        if sorted(int(a) % 4 for a in call.attrs.axis) != list(PIXEL_AXES):
            return call
        source = self._bound(call.args[0])
        channel_slice = None
        if op_name(source) == "relax.strided_slice" and [int(a) for a in source.args[1]] == [1]:
            channel_slice, source = source, self._bound(source.args[0])
        if source is None or not _is_relayout_to_plain(source):
            return call
        blocked = source.args[0]
        pooled = self.builder_.emit(relax.op.mean(blocked, axis=list(PIXEL_AXES), keepdims=True))
        result = to_plain(pooled, _static_shape(blocked)[4])
        if channel_slice is not None:
            result = relax.Call(channel_slice.op, [self.builder_.emit(result), *channel_slice.args[1:]], channel_slice.attrs)
        if not call.attrs.keepdims:
            result = relax.op.squeeze(self.builder_.emit(result), axis=list(PIXEL_AXES))
        self.moved += 1
        return result


def pool_before_relayout() -> tvm.transform.Pass:
    """The pass (module docstring); the relayout and slice it bypasses are removed when no other
    kernel reads them."""

    @tvm.transform.module_pass(opt_level=0, name="slimtvm.PoolBeforeRelayout")
    def _pool_first(mod, _ctx):
        mutator = _PoolFirst(mod)
        for gvar, func in list(mod.functions.items()):
            if isinstance(func, relax.Function):
                mutator.builder_.update_func(gvar, mutator.visit_expr(func))
        if not mutator.moved:
            return mod
        return relax.transform.DeadCodeElimination()(mutator.builder_.get())

    return _pool_first
