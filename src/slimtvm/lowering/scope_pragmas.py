"""Drop the ``pragma_scope`` attributes that TOPI's IRBuilder kernels carry into code generation.

TOPI writes some operators (``scatter_nd``, ``scatter_elements``, ``index_put``, NMS) with TVM's
IRBuilder, which marks consecutive statements with ``T.seq_scope()``: an ``AttrStmt`` keyed
``pragma_scope`` whose only job is to let the builder hold a sequence. TVM 0.27's LLVM code
generator knows no such pragma and prints ``Warning: Unknown pragma pragma_scope`` once per
kernel (eight lines for torchvision's Swin-V2-T, whose shifted-window masks keep eight
``ScatterND`` nodes). The attribute changes no code: this pass replaces it with its body. (The
scatters constant folding builds and runs at compile time log it too; passes/fold_constants.py
drops that line.)
"""

from __future__ import annotations

import tvm
from tvm.tirx.stmt import AttrStmt

from .prim_func_rewrites import rewrite_prim_funcs

SCOPE_PRAGMA = "pragma_scope"


def drop_scope_pragmas() -> tvm.transform.Pass:
    """Module pass: every ``AttrStmt`` keyed :data:`SCOPE_PRAGMA` becomes its body; other
    statements and functions are left as they are."""

    @tvm.transform.module_pass(opt_level=0, name="slimtvm.DropScopePragmas")
    def _drop(mod, _ctx):
        return rewrite_prim_funcs(mod, [(AttrStmt, _without_scope)])

    return _drop


def _without_scope(stmt: AttrStmt):
    return stmt.body if str(stmt.attr_key) == SCOPE_PRAGMA else stmt
