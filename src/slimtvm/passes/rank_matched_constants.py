"""Give a lower-rank constant operand of an element-wise op its tensor's rank: ``x · c[C,1,1]`` → ``x · c[1,C,1,1]``.

ONNX broadcasting lets a per-channel constant of shape ``[C, 1, 1]`` scale an NCHW tensor; the
light zoo's DenseNet-121 follows each BatchNormalization with ``Mul`` and ``Add`` of such
constants (``Unsqueeze`` of a ``[C]`` initializer, folded to a constant). Relax's ``ConvertLayout``
moves an element-wise op into a blocked layout (NCHW16c) only when its operands have the layout's
rank, so each of those ops stayed in NCHW, with a relayout before and after it: 239 relayouts
and 3.5 ms of DenseNet-121's 24.7 ms (1 thread, Zen 5), and the ops could not join the convs'
epilogues. With the constant reshaped to ``[1, C, 1, 1]`` (the same values, the same broadcast)
they pass through the layout, and into the conv before them.

Rewrites a call of a binary op of :data:`BROADCAST_OPS` whose one operand is a constant of rank
1 or more and whose other has a known, larger rank. Refuses (leaves unchanged) scalars, two
constants (constant folding's), unknown ranks and every other op.
"""

from __future__ import annotations

import tvm
from tvm import relax

from .constants import constant_value
from .relax_functions import rewrite_relax_functions

BROADCAST_OPS = frozenset({"relax.add", "relax.subtract", "relax.multiply", "relax.divide", "relax.maximum", "relax.minimum"})


def _rank(expr) -> int | None:
    """The rank of a (non-constant) tensor expression, None where unknown (TVM 0.27: ``expr.ty``)."""
    ty = getattr(expr, "ty", None)
    ndim = int(getattr(ty, "ndim", -1)) if isinstance(ty, relax.TensorType) else -1
    return None if ndim < 0 else ndim


def binary_broadcast_args(call) -> list | None:
    """The two arguments of a call of a binary op of :data:`BROADCAST_OPS`, else None."""
    if isinstance(call.op, tvm.ir.Op) and call.op.name in BROADCAST_OPS and len(call.args) == 2:
        return list(call.args)
    return None


def with_args(call, args):
    """The same element-wise op on ``args`` (its type inferred again)."""
    return getattr(relax.op, call.op.name.removeprefix("relax."))(*args)


def _raised(constant, rank: int):
    """``constant`` with leading unit axes up to ``rank``."""
    value = constant_value(constant)
    return relax.const(value.reshape((1,) * (rank - value.ndim) + value.shape), str(value.dtype))


@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    def __init__(self, mod):
        super().__init__(mod)
        self.count = 0

    def visit_call_(self, call):
        call = super().visit_call_(call)
        args = binary_broadcast_args(call)
        if args is None:
            return call
        constants = [constant_value(arg) is not None for arg in args]
        if constants[0] == constants[1]:
            return call
        index = constants.index(True)
        constant, other = args[index], args[1 - index]
        constant_rank, other_rank = constant_value(constant).ndim, _rank(other)
        if not constant_rank or other_rank is None or other_rank <= constant_rank:
            return call
        args[index] = _raised(constant, other_rank)
        self.count += 1
        return with_args(call, args)


@tvm.transform.module_pass(opt_level=0, name="slimtvm.RankMatchedConstants")
class RankMatchedConstants:
    """Relax module pass: a lower-rank constant operand of a broadcasting element-wise op gets
    leading unit axes up to its tensor operand's rank (see module doc); ``rewritten`` counts them."""

    def __init__(self):
        self.rewritten = 0

    def transform_module(self, mod, _ctx):
        rewriter = _Rewriter(mod)
        mod = rewrite_relax_functions(mod, rewriter)
        self.rewritten = rewriter.count
        return mod
