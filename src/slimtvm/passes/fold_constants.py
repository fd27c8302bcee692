"""Relax's FoldConstant, kept only when it leaves a whole module (reshapes and relayouts of
constants first folded by numpy: passes/constant_data_movement.py).

On a graph with a data-dependent slice (ONNX Slice whose bounds are graph inputs), TVM 0.27's
FoldConstant legalizes part of ``dynamic_strided_slice`` and leaves a ``call_tir`` of a shape
function it never adds to the module; every later build then fails ("There is no definition of
I.GlobalVar("shape_func")"). Plain TVM folds constants only after legalization, where this does
not happen. Here the fold is undone for such a module: its weights stay as the graph computes
them (folded later, after legalization), and the model builds.
"""

from __future__ import annotations

import warnings

import tvm
from tvm import relax

from ..native_log import without_native_lines
from .constant_data_movement import fold_constant_data_movement

# TOPI's ``take`` logs this whenever FoldConstant legalizes a Gather, also one it cannot fold (data
# not constant); the kernels' own legalization (lowering/gathers.py) checks bounds instead
SPURIOUS_TAKE_WARNING = "Fast mode segfaults when there are out-of-bounds indices"
# TIR's ``pow`` logs this for every ``power`` FoldConstant legalizes by TVM's default (GPT-2's
# ``x ** 3``, data not constant); the kernels compute such powers by multiplies (lowering/fast_math.py)
SPURIOUS_POW_WARNING = "Detected pow(x, y) where y >= 3"
# LLVM's code generator logs this for TOPI's IRBuilder kernels (``scatter_nd``: Swin-V2's window
# masks), whose ``seq_scope`` attribute only structures the builder; FoldConstant builds them to
# fold constant scatters. The library's own kernels drop the attribute (lowering/scope_pragmas.py)
SPURIOUS_SCOPE_PRAGMA_WARNING = "Unknown pragma pragma_scope"


def undefined_functions(mod) -> list:
    """Names of functions the module's Relax code calls but the module does not define."""
    defined = {gvar.name_hint for gvar in mod.get_global_vars()}
    missing = set()

    def visit(expr):
        if isinstance(expr, relax.GlobalVar) and expr.name_hint not in defined:
            missing.add(expr.name_hint)

    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return sorted(missing)


@tvm.transform.module_pass(opt_level=0, name="slimtvm.FoldConstantsSafely")
class FoldConstantsSafely:
    """FoldConstant, or the module unchanged where FoldConstant would leave undefined calls."""

    def transform_module(self, mod, _ctx):
        mod = fold_constant_data_movement(mod)  # exact and ~1000× faster for the operators it takes
        with without_native_lines(SPURIOUS_TAKE_WARNING, SPURIOUS_POW_WARNING, SPURIOUS_SCOPE_PRAGMA_WARNING):
            folded = relax.transform.FoldConstant()(mod)
        missing = undefined_functions(folded)
        if not missing:
            return folded
        warnings.warn(
            f"constants not folded before layer detection: TVM's FoldConstant would leave calls of undefined {', '.join(missing)} "
            "(a data-dependent shape); weights computed in the graph are folded after legalization, so such layers are not recognised as binary",
            stacklevel=2,
        )
        return mod
