"""Apply an expression mutator to every Relax function of a module (the body of most graph passes)."""

from __future__ import annotations

from tvm import relax


def rewrite_relax_functions(mod, rewriter):
    """``mod`` with every ``relax.Function`` replaced by ``rewriter.visit_expr`` of it (in place,
    as a module pass may); PrimFuncs and other functions are left as they are."""
    for gvar, func in list(mod.functions.items()):
        if isinstance(func, relax.Function):
            mod[gvar] = rewriter.visit_expr(func)
    return mod


def rewrite_with_builder(mod, rewriter):
    """``mod`` with every ``relax.Function`` visited by ``rewriter`` (a mutator with ``start(func)``,
    called first, and a ``count`` of rewrites) and emitted through its block builder, dead code
    removed when it rewrote anything; ``mod`` itself when it did not."""
    for gvar, func in list(mod.functions.items()):
        if isinstance(func, relax.Function):
            rewriter.start(func)
            rewriter.builder_.update_func(gvar, rewriter.visit_expr(func))
    return relax.transform.DeadCodeElimination()(rewriter.builder_.get()) if rewriter.count else mod
