"""Turn TVM's imported ``Clip`` kernels and ``clip`` ops into Relax ``maximum`` / ``minimum`` ops:
``call_tir(max, x, c)`` → ``maximum(x, c)``, ``clip(x, lo, hi)`` → ``minimum(maximum(x, lo), hi)``.

TVM's ONNX frontend imports Clip (ReLU6 in MobileNets) as ``call_tir`` of TOPI's maximum and
minimum kernels against a scalar constant. ``ConvertLayout`` cannot see through ``call_tir``, so
every conv before and after a Clip was wrapped in layout transforms to and from NCHW. Relax's
``maximum`` and ``minimum`` ops compute the same element-wise values and follow any layout.
HardSwish and HardSigmoid (MobileNetV3) are imported with Relax's ``clip`` op, which
``ConvertLayout`` does not move into a blocked layout either: MobileNetV3-Large ran 43 relayouts
(11% of its time) and none of its hard-swishes in a conv's epilogue.

Which calls qualify is decided from the PrimFunc itself, not its name: a single block storing
``max(A[i...], B[()])`` (or ``min``) of its two parameters, where ``B`` is a scalar constant.
Every ``clip`` op qualifies (its bounds are scalars of the tensor's dtype). Refuses (leaves
unchanged) anything else.
"""

from __future__ import annotations

import tvm
from tvm import relax, tirx

from .relax_functions import rewrite_relax_functions


def _scalar_min_max_kind(func) -> str | None:
    """``"maximum"``/``"minimum"`` if ``func`` is an element-wise max/min of a tensor and a scalar."""
    if not isinstance(func, tirx.PrimFunc) or len(func.params) != 3:
        return None
    stores = _buffer_stores(func.body)
    if len(stores) != 1:
        return None
    value = stores[0].value
    kind = {tirx.Max: "maximum", tirx.Min: "minimum"}.get(type(value))
    # (TVM 0.27 loads are TensorLoad nodes with .source and .indices; BufferLoad is a factory)
    if kind is None or not all(hasattr(operand, "source") and hasattr(operand, "indices") for operand in (value.a, value.b)):
        return None
    if len(value.b.indices) != 0 or len(value.a.indices) == 0 or value.a.source.same_as(value.b.source):
        return None
    return kind


def _buffer_stores(stmt) -> list:
    """Every BufferStore under ``stmt`` (TVM 0.27 has no Python TIR visitor; the nesting of a
    legalized element-wise kernel is blocks, block realizes, loops and sequences)."""
    if stmt is None:
        return []
    if isinstance(stmt, tirx.BufferStore):
        return [stmt]
    found = []
    for child in getattr(stmt, "seq", []) or []:
        found += _buffer_stores(child)
    for attr in ("block", "body", "init"):
        if hasattr(stmt, attr):
            found += _buffer_stores(getattr(stmt, attr))
    return found


@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    def __init__(self, mod):
        super().__init__(mod)
        self.mod = mod
        self.count = 0

    def visit_call_(self, call):
        call = super().visit_call_(call)
        if isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.clip":
            data, low, high = call.args
            dtype = str(data.ty.dtype)
            self.count += 1
            return relax.op.minimum(relax.op.maximum(data, relax.const(low.value, dtype)), relax.const(high.value, dtype))
        if not (isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.call_tir"):
            return call
        callee, args = call.args[0], call.args[1]
        if not isinstance(callee, tvm.ir.GlobalVar) or not isinstance(args, relax.Tuple) or len(args.fields) != 2:
            return call
        data, bound = args.fields
        if not isinstance(bound, tvm.ir.GenericConst) or len(bound.value.shape) != 0:
            return call
        kind = _scalar_min_max_kind(self.mod[callee])
        if kind is None:
            return call
        self.count += 1
        return getattr(relax.op, kind)(data, bound)


@tvm.transform.module_pass(opt_level=0, name="slimtvm.ScalarMinMaxAsOps")
class ScalarMinMaxAsOps:
    """Relax module pass: scalar max/min ``call_tir`` kernels and ``clip`` ops become ``relax.maximum``/``minimum``."""

    def __init__(self):
        self.rewritten = 0

    def transform_module(self, mod, _ctx):
        rewriter = _Rewriter(mod)
        mod = rewrite_relax_functions(mod, rewriter)
        self.rewritten = rewriter.count
        return relax.transform.DeadCodeElimination()(mod) if rewriter.count else mod
