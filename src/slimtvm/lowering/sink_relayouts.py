"""Compute element-wise ops in the plain layout when their result is only relayouted back to it.

ConvertLayout computes an element-wise op in the blocked layout as soon as one input is blocked.
Where plain-layout kernels (sparse convs) meet blocked ones — a residual add of a sparse conv's
output and a dense block's — that gives ``to_blocked(a) → add(·, b) → relu → to_plain``: two
relayouts of a tensor per layer. This pass rewrites such an op (its only reader a relayout to
plain NCHW) to run on plain inputs: an input relayouted from plain is used directly, a blocked
input through its plain version (a relayout another reader already needs), a blocked constant is
relayouted once at compile time; its blocked readers, if any, get a relayout of the plain
result, which dies when they move too. It applies only when no input needs a new relayout, in
graph order, so chains of element-wise ops move as a whole (a ResNet's residual adds included).
Element-wise ops compute the same values in any layout: exact.
"""

from __future__ import annotations

import tvm
from tvm import relax

from ..passes.elementwise_ops import ELEMENTWISE_OPS
from .relayouts import op_name, rank, same_channels, to_blocked, to_plain


class _Graph:
    """Bindings of one function: values, readers and the relayouts between plain and blocked."""

    def __init__(self, func):
        self.value, self.readers, self.position = {}, {}, {}
        self.to_plain = {}  # blocked var -> a var bound to its relayout to plain (4-D)
        for block in func.body.blocks:
            for binding in block.bindings:
                var, value = binding.var, binding.value
                self.value[var] = value
                self.position[var] = len(self.position)
                for arg in value.args if isinstance(value, relax.Call) else []:
                    if isinstance(arg, relax.Var):
                        self.readers.setdefault(arg, []).append(var)
                if op_name(value) == "relax.layout_transform" and rank(value.args[0]) == 5 and rank(var) == 4 and same_channels(value.args[0], var):
                    self.to_plain.setdefault(value.args[0], var)
        # element-wise 5-D ops whose result reaches a relayout to plain through element-wise ops only
        self.leads_to_plain = set()
        for var in sorted(self.value, key=self.position.get, reverse=True):
            if op_name(self.value[var]) in ELEMENTWISE_OPS and rank(var) == 5:
                if var in self.to_plain or any(reader in self.leads_to_plain for reader in self.readers.get(var, [])):
                    self.leads_to_plain.add(var)

    def from_plain(self, var):
        """The plain var that ``var`` is a relayout of (4-D → 5-D), else None."""
        value = self.value.get(var)
        if op_name(value) == "relax.layout_transform" and rank(value.args[0]) == 4 and rank(var) == 5 and same_channels(var, value.args[0]):
            return value.args[0]
        return None


@relax.expr_functor.mutator
class _Sink(relax.PyExprMutator):
    """One pass in graph order: a 5-D element-wise op whose result reaches a relayout to plain
    (through element-wise ops), and whose blocked inputs all have a plain version without a new
    relayout of a computed tensor,
    is computed on those plain versions; its blocked readers get a relayout of the plain result
    (dead once they move too)."""

    def __init__(self, mod):
        super().__init__(mod)
        self.graph = None
        self.plain_of = {}  # original blocked var -> its plain version in the new function
        self.changed = False

    def visit_function_(self, func):
        self.graph = _Graph(func)
        self.plain_of = {}
        return super().visit_function_(func)

    def visit_var_binding_(self, binding):
        var, value = binding.var, binding.value
        if op_name(value) == "relax.layout_transform" and rank(var) == 4 and value.args[0] in self.plain_of and same_channels(value.args[0], var):
            self.set_var_remap(var, self.plain_of[value.args[0]])  # the relayout of a moved op: its plain result
            return
        if var in self.graph.leads_to_plain:
            block = int(var.ty.shape[4])
            args = [self._plain(arg, block, self.graph.position[var]) for arg in value.args]
            if all(arg is not None for arg in args):
                plain = self.builder_.emit(relax.Call(value.op, args, value.attrs, value.ty_args))
                self.plain_of[var] = plain
                self.set_var_remap(var, self.builder_.emit(to_blocked(plain, block)))  # for its other readers
                self.changed = True
                return
        super().visit_var_binding_(binding)

    def _plain(self, arg, block: int, position: int):
        """``arg`` (an argument of the op at ``position``) in the plain layout, or None where that
        needs a new relayout of a computed tensor."""
        if not isinstance(arg, relax.Expr) or rank(arg) != 5:
            return self.visit_expr(arg)
        if int(arg.ty.shape[4]) != block:
            return None
        if isinstance(arg, tvm.ir.GenericConst):
            return to_plain(arg, block)  # folded at compile time
        if arg in self.plain_of:
            return self.plain_of[arg]
        source = self.graph.from_plain(arg)
        if source is not None:
            return self.visit_expr(source)
        existing = self.graph.to_plain.get(arg)
        if existing is None:
            return None
        if self.graph.position[existing] < position:
            return self.visit_expr(existing)
        # the same relayout, bound later: emitted here, the later one is merged into it (common subexpressions)
        return self.builder_.emit(to_plain(self.visit_expr(arg), block))


def sink_relayouts(max_rounds: int = 4) -> tvm.transform.Pass:
    """The pass (module docstring); dead relayouts are removed after each round."""

    @tvm.transform.module_pass(opt_level=0, name="slimtvm.SinkRelayouts")
    def _sink(mod, _ctx):
        for _ in range(max_rounds):
            sink = _Sink(mod)
            for gvar, func in list(mod.functions.items()):
                if isinstance(func, relax.Function):
                    sink.builder_.update_func(gvar, sink.visit_expr(func))
            if not sink.changed:
                break
            mod = relax.transform.DeadCodeElimination()(relax.transform.EliminateCommonSubexpr()(sink.builder_.get()))
        return mod

    return _sink
