"""Constants reshaped, transposed or relayouted by numpy, before Relax's FoldConstant.

FoldConstant evaluates each operator on constants by legalizing it to a TIR kernel and building
that with LLVM: 27–60 ms a call. The layout conversion wraps every conv's weights in
``layout_transform`` (OIHW → OIHW[x]i[x]o): 549 of them took 35 of DenseNet-121's 72 s of compile;
a Gemm's weights are transposed, a BN's parameters reshaped, in every compile (0.12 of a small
CNN's 0.9 s). These operators only move values: numpy computes them (the same values, moved:
exact). ``layout_transform`` is folded where it is a reshape and a transpose (each output index a
source index, or its quotient or remainder by a block size); padded blocks and other index maps,
and every other operator, are left to FoldConstant.
"""

from __future__ import annotations

import numpy as np
from tvm import relax, tirx

from .constants import constant_value
from .detect_binary import op_name
from .relax_functions import rewrite_relax_functions
from .static_shapes import static_shape

RESHAPES = ("relax.reshape", "relax.expand_dims", "relax.squeeze")


def split_and_permutation(index_map, shape: list) -> tuple | None:
    """``(split shape, axes)`` such that ``array.reshape(split shape).transpose(axes)`` is the
    relayout of an ``array`` of ``shape`` by ``index_map``, where each output index of the map is
    a source index ``v``, or ``v // b`` and ``v % b`` (both, in either order) with ``b`` dividing
    ``v``'s extent; None for any other map (padding, fused or reversed axes)."""
    variables = list(index_map.initial_indices)
    if len(variables) != len(shape):
        return None
    parts = []  # (source axis, "whole" | "outer" | "inner", block)
    for expr in index_map.final_indices:
        part = _part(expr, variables)
        if part is None:
            return None
        parts.append(part)
    split_shape, positions = [], {}
    for axis, extent in enumerate(shape):
        kinds = {(kind, block) for source, kind, block in parts if source == axis}
        if kinds == {("whole", 0)}:
            positions[(axis, "whole")] = len(split_shape)
            split_shape.append(extent)
            continue
        blocks = {block for _, block in kinds}
        if len(kinds) != 2 or len(blocks) != 1 or {kind for kind, _ in kinds} != {"outer", "inner"}:
            return None
        block = blocks.pop()
        if block <= 0 or extent % block:
            return None
        positions[(axis, "outer")] = len(split_shape)
        positions[(axis, "inner")] = len(split_shape) + 1
        split_shape.extend([extent // block, block])
    if len(parts) != len(split_shape):
        return None  # a source index used twice
    return split_shape, [positions[(source, kind)] for source, kind, _ in parts]


def _part(expr, variables):
    """(source axis, kind, block) of one output index expression, or None."""

    def axis_of(var):
        return next((i for i, v in enumerate(variables) if v.same_as(var)), None)

    if isinstance(expr, tirx.Var):
        axis = axis_of(expr)
        return None if axis is None else (axis, "whole", 0)
    for node, kind in ((tirx.FloorDiv, "outer"), (tirx.FloorMod, "inner")):
        if isinstance(expr, node) and isinstance(expr.a, tirx.Var) and isinstance(expr.b, tirx.IntImm):
            axis = axis_of(expr.a)
            return None if axis is None else (axis, kind, int(expr.b.value))
    return None


def moved_constant(call, source=None) -> np.ndarray | None:
    """The value of ``call`` (one of the data-movement operators of the module docstring, on a
    constant, with a static result shape), computed by numpy; None where it is not such a call or
    its ``layout_transform`` is not a reshape and a transpose. ``source``: the constant its
    argument is bound to, where that is a variable."""
    name = op_name(call)
    if name not in (*RESHAPES, "relax.permute_dims", "relax.layout_transform"):
        return None
    array = constant_value(source if source is not None else call.args[0])
    shape = static_shape(call)
    if array is None or shape is None:
        return None
    if name in RESHAPES:
        result = array.reshape(shape)
    elif name == "relax.permute_dims":
        axes = call.attrs.axes
        result = array.transpose(None if axes is None else [int(axis) for axis in axes])
    else:
        plan = split_and_permutation(call.attrs.index_map, list(array.shape))
        if plan is None:
            return None
        result = array.reshape(plan[0]).transpose(plan[1])
    return np.ascontiguousarray(result) if list(result.shape) == shape else None


@relax.expr_functor.mutator
class _FoldConstantDataMovement(relax.PyExprMutator):
    def __init__(self, mod=None):
        super().__init__(mod)
        self.count = 0

    def visit_call_(self, call):
        call = super().visit_call_(call)
        argument = call.args[0] if call.args else None
        value = moved_constant(call, self.lookup_binding(argument) if isinstance(argument, relax.Var) else None)
        if value is None:
            return call
        self.count += 1
        return relax.const(value, value.dtype)


def fold_constant_data_movement(mod):
    """``mod`` with the module docstring's operators on constants replaced by their values (in
    place, as a module pass may)."""
    return rewrite_relax_functions(mod, _FoldConstantDataMovement(mod))
