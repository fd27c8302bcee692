"""Rewrite the statements of every PrimFunc in a module (the after-scheduling passes' common step).

TVM 0.27's Python API has no TIR statement mutator; ``tvm_ffi.structural_map`` rebuilds a
function's body with each matching node replaced by what its callback returns.
"""

from __future__ import annotations

import tvm_ffi
from tvm import tirx


def rewrite_prim_funcs(mod, callbacks: list):
    """``mod`` with every PrimFunc's body mapped through ``callbacks`` (``(node type, function)``
    entries, as ``tvm_ffi.structural_map`` takes them); functions the callbacks leave unchanged,
    and every other function, stay as they are. Returns the module (changed in place)."""
    for gvar, func in list(mod.functions.items()):
        if isinstance(func, tirx.PrimFunc):
            body = tvm_ffi.structural_map(func.body, callbacks)
            if not body.same_as(func.body):
                mod[gvar] = func.with_body(body)
    return mod
