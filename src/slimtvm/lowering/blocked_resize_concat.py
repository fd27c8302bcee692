"""Resize and channel concat in the blocked layout, where their inputs come from blocked tensors.

Relax's ConvertLayout has no layout rule for ``image.resize2d``, so a detector's upsampling
path (conv → Resize → Concat with a backbone feature → convs) ran as ``to_plain`` relayouts of
both inputs, a plain resize and concat, and one ``to_blocked`` relayout of the concat per reader
(C3 and C2f blocks read it twice). TOPI's resize computes the NCHW[x]c layout as well, and a
concat along channels of tensors with whole channel blocks is the concat of their blocks. This
pass, after ConvertLayout, rewrites in graph order:

- ``resize2d(to_plain(b))`` (layout NCHW) → ``to_plain(resize2d(b))`` in ``b``'s NCHW[x]c layout;
- ``concat([to_plain(b₁), to_plain(b₂), …], axis=1)`` → ``to_plain(concat([b₁, b₂, …], axis=1))``
  when every ``bᵢ`` has the same channel block;
- ``to_blocked(to_plain(b))`` → ``b``.

A tensor counts as ``to_plain(b)`` only when the relayout adds no padded channels, so the
rewrite moves the same values: exact. Relayouts left without readers are removed.

YOLOv5s at 320×320 (Zen 4, 1 thread): its five relayouts and two plain resize + concat
kernels around the two upsamplings took 1.0 ms of 41.
"""

from __future__ import annotations

import tvm
from tvm import relax

from .relayouts import op_name, rank, same_channels, to_plain


@relax.expr_functor.mutator
class _BlockedResizeConcat(relax.PyExprMutator):
    """One pass in graph order (module docstring); ``changed`` says whether anything moved."""

    def __init__(self, mod):
        super().__init__(mod)
        self.value = {}
        self.blocked_of = {}  # original plain var -> its blocked form in the new function
        self.changed = False

    def visit_function_(self, func):
        self.value = {binding.var: binding.value for block in func.body.blocks for binding in block.bindings}
        self.blocked_of = {}
        return super().visit_function_(func)

    def visit_var_binding_(self, binding):
        var, value = binding.var, binding.value
        op = op_name(value)
        if op == "relax.layout_transform" and rank(var) == 5 and value.args[0] in self.blocked_of:
            blocked = self.blocked_of[value.args[0]]
            if same_channels(var, value.args[0]) and int(var.ty.shape[4]) == int(blocked.ty.shape[4]):
                self.set_var_remap(var, blocked)
                return
        if op == "relax.image.resize2d" and str(value.attrs.layout) == "NCHW":
            source = self._blocked(value.args[0])
            if source is not None:
                attrs = value.attrs
                block = int(source.ty.shape[4])
                resized = relax.op.image.resize2d(
                    source,
                    value.args[1],
                    roi=[float(v) for v in attrs.roi],
                    layout=f"NCHW{block}c",
                    method=str(attrs.method),
                    coordinate_transformation_mode=str(attrs.coordinate_transformation_mode),
                    rounding_method=str(attrs.rounding_method),
                    cubic_alpha=float(attrs.cubic_alpha),
                    cubic_exclude=int(attrs.cubic_exclude),
                    extrapolation_value=float(attrs.extrapolation_value),
                    out_dtype=attrs.out_dtype if str(attrs.out_dtype) else None,
                )
                self._replace(var, self.builder_.emit(resized), block)
                return
        if op == "relax.concat" and value.attrs.axis is not None and int(value.attrs.axis) == 1 and isinstance(value.args[0], relax.Tuple):
            parts = [self._blocked(field) for field in value.args[0].fields]
            blocks = {int(part.ty.shape[4]) for part in parts if part is not None}
            if parts and all(part is not None for part in parts) and len(blocks) == 1:
                self._replace(var, self.builder_.emit(relax.op.concat(parts, axis=1)), blocks.pop())
                return
        super().visit_var_binding_(binding)

    def _replace(self, var, blocked, block: int) -> None:
        """``var`` is now ``to_plain(blocked)`` (for readers that stay plain, dead otherwise)."""
        self.blocked_of[var] = blocked
        self.set_var_remap(var, self.builder_.emit(to_plain(blocked, block)))
        self.changed = True

    def _blocked(self, arg):
        """The blocked tensor (in the new function) that plain ``arg`` is an unpadded relayout
        of, else None."""
        if arg in self.blocked_of:
            return self.blocked_of[arg]
        value = self.value.get(arg)
        if op_name(value) == "relax.layout_transform" and rank(arg) == 4 and rank(value.args[0]) == 5 and same_channels(value.args[0], arg):
            return self.visit_expr(value.args[0])
        return None


def blocked_resize_concat() -> tvm.transform.Pass:
    """The pass (module docstring)."""

    @tvm.transform.module_pass(opt_level=0, name="slimtvm.BlockedResizeConcat")
    def _rewrite(mod, _ctx):
        rewrite = _BlockedResizeConcat(mod)
        for gvar, func in list(mod.functions.items()):
            if isinstance(func, relax.Function):
                rewrite.builder_.update_func(gvar, rewrite.visit_expr(func))
        if not rewrite.changed:
            return mod
        return relax.transform.DeadCodeElimination()(rewrite.builder_.get())

    return _rewrite
