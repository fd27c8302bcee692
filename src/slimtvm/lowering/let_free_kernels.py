"""The kernels of slimtvm's families without ``Let`` expressions, so that MetaSchedule can tune them.

lowering/fast_math.py writes an exponential or erf as one expression that binds its input once
(a TIR ``Let``). MetaSchedule's task scheduler estimates every task's floating-point operations
with a visitor that has no case for ``Let`` and stops the whole run ("Do not have a default for
prim.Let"): ``slimtvm tune`` failed on every model with a SiLU, sigmoid, GELU or softmax in a conv
or matmul epilogue (EfficientNet, YOLO, ConvNeXt, ViT). Here each ``Let`` in a family's kernel is
replaced by its value substituted into its body, before tuning extracts its tasks and before
``compile`` looks tuned schedules up, so both see the same kernels. The repeated value is an
accumulator or an element of the epilogue (a load and a few operations), which LLVM computes
once; generic kernels keep their ``Let`` (a gather inlined into a sigmoid stays evaluated once).
"""

from __future__ import annotations

import tvm
import tvm_ffi
from tvm import s_tir, tirx

from ..schedules.registry import family_of


def has_let(func) -> bool:
    """Whether a PrimFunc holds a ``Let`` expression."""
    found = []
    tvm_ffi.structural_walk(func.body, lambda node: found.append(True) if isinstance(node, tirx.Let) else None)
    return bool(found)


def without_lets(func):
    """``func`` with every ``Let`` expression replaced by its body, the bound value substituted."""

    def inline(let):
        return tvm_ffi.structural_map(let.body, [(tirx.Var, lambda var: let.value if var.same_as(let.var) else var)])

    return tvm_ffi.structural_map(func, [(tirx.Let, inline)])


@tvm.transform.module_pass(opt_level=0, name="slimtvm.LetFreeKernels")
def let_free_kernels(mod, _ctx):
    """The module pass of the module docstring."""
    for gvar, func in list(mod.functions.items()):
        if isinstance(func, tirx.PrimFunc) and has_let(func) and family_of(s_tir.Schedule(func)) is not None:
            mod[gvar] = without_lets(func)
    return mod
