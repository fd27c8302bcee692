"""Channels-last stretches between two transposes back in NCHW: ``Linear`` layers become 1×1 convs.

ConvNeXt (and other networks written with ``nn.Linear`` on channels-last tensors) export each
block as ``Transpose(0, 2, 3, 1)`` → ``LayerNormalization(axis=-1)`` → ``MatMul`` + ``Add`` → GELU
→ ``MatMul`` + ``Add`` → ``Transpose(0, 3, 1, 2)``. TVM imports the 4-D matmuls as batched
matmuls, which no slimtvm kernel takes: they ran on TVM's generic schedule (ConvNeXt-Tiny, 1
thread, Zen 5: 4.9 s against onnxruntime's 44 ms). Between the two transposes every op acts per
pixel on the channel axis, so the stretch is the same computation in NCHW: the transposes
cancel, a matmul by a constant ``W[K, N]`` is a 1×1 conv by ``Wᵀ`` (slimtvm's conv kernels, with
the bias, GELU and the rest fused as their epilogue), a layer norm over the last axis is one
over the channel axis, and a per-channel constant ``[C]`` becomes ``[1, C, 1, 1]``.

A stretch is rewritten when all of these hold, else it is left as it is:

- it starts at ``permute_dims(x, [0, 2, 3, 1])`` of a 4-D tensor, and every use of every value in
  it is an op of the stretch or a ``permute_dims(·, [0, 3, 1, 2])`` that ends it;
- its ops are: matmul by a constant 2-D float weight; layer norm over the last axis; element-wise
  ops of :data:`BINARY_OPS` between two of its values or with a constant that is a scalar or
  varies along the channel axis only; unary ops of :data:`UNARY_OPS`;
- it holds a matmul or a layer norm (torchvision's ``LayerNorm2d`` is a transpose, a layer norm
  and a transpose back), and its values are dataflow values (a function output is never renamed).
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from .constants import constant_value
from .relax_functions import rewrite_relax_functions

TO_CHANNELS_LAST = (0, 2, 3, 1)
TO_CHANNELS_FIRST = (0, 3, 1, 2)
BINARY_OPS = frozenset({"relax.add", "relax.subtract", "relax.multiply", "relax.divide", "relax.maximum", "relax.minimum", "relax.power"})
UNARY_OPS = frozenset(
    {
        "relax.erf",
        "relax.tanh",
        "relax.sigmoid",
        "relax.exp",
        "relax.sqrt",
        "relax.negative",
        "relax.abs",
        "relax.nn.relu",
        "relax.nn.gelu",
        "relax.nn.gelu_tanh",
        "relax.nn.silu",
        "relax.clip",
    }
)


def _op_name(value) -> str | None:
    return value.op.name if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) else None


def _permute_axes(value) -> tuple | None:
    if _op_name(value) != "relax.permute_dims" or value.attrs.axes is None:
        return None
    return tuple(int(axis) for axis in value.attrs.axes)


def _rank(expr) -> int:
    ty = getattr(expr, "ty", None)
    return int(getattr(ty, "ndim", -1)) if isinstance(ty, relax.TensorType) else -1


def _channel_constant(value: np.ndarray, channels: int) -> np.ndarray | None:
    """A constant operand in NCHW form: a scalar as it is, ``[C]``/``[1, 1, 1, C]`` (or ``[1]``) as
    ``[1, C, 1, 1]``; None for anything that varies along another axis."""
    if value.ndim == 0:
        return value
    if value.ndim > 4 or any(int(d) != 1 for d in value.shape[:-1]) or int(value.shape[-1]) not in (1, channels):
        return None
    return value.reshape(1, -1, 1, 1)


class _Stretch:
    """One channels-last stretch: its entry permute, its ops (binding var → call) in order, its exits."""

    def __init__(self, entry):
        self.entry = entry
        self.ops: dict = {}
        self.exits: set = set()


def _find_stretches(block) -> list:
    """The rewritable stretches of one dataflow block (module docstring)."""
    bindings = [b for b in block.bindings if isinstance(b, relax.VarBinding)]
    users: dict = {}
    for binding in bindings:
        for var in relax.analysis.free_vars(binding.value):
            users.setdefault(var, []).append(binding)
    stretches = []
    for binding in bindings:
        source = binding.value.args[0] if isinstance(binding.value, relax.Call) and binding.value.args else None
        if _permute_axes(binding.value) != TO_CHANNELS_LAST or not isinstance(source, relax.Var) or _rank(source) != 4:
            continue
        stretch = _grow(_Stretch(binding.var), users)
        if stretch is not None:
            stretches.append(stretch)
    return stretches


def _grow(stretch: _Stretch, users: dict):
    """Follow every use from the entry; None where a use leaves the stretch by another path."""
    inside, pending = {stretch.entry}, [stretch.entry]
    while pending:
        var = pending.pop()
        if not isinstance(var, relax.DataflowVar):
            return None
        for binding in users.get(var, []):
            if binding.var in inside or binding.var in stretch.exits:
                continue
            if _permute_axes(binding.value) == TO_CHANNELS_FIRST:
                if not isinstance(binding.var, relax.DataflowVar):
                    return None
                stretch.exits.add(binding.var)
                continue
            if not _rewritable(binding.value, inside):
                return None
            inside.add(binding.var)
            stretch.ops[binding.var] = binding.value
            pending.append(binding.var)
    if not any(_op_name(call) in ("relax.matmul", "relax.nn.layer_norm") for call in stretch.ops.values()):
        return None  # element-wise ops alone: transposes around them cost what they cost anyway
    # every operand that is a variable must be inside (checked once the stretch is complete)
    for call in stretch.ops.values():
        for arg in call.args:
            if isinstance(arg, relax.Var) and arg not in inside:
                return None
    return stretch


def _rewritable(call, inside: set) -> bool:
    name = _op_name(call)
    if name is None or _rank(call) != 4:
        return False
    channels = int(call.ty.shape[3]) if call.ty.shape is not None else -1
    if name == "relax.matmul":
        weight = constant_value(call.args[1])
        return call.args[0] in inside and weight is not None and weight.ndim == 2 and weight.dtype == np.float32
    if name == "relax.nn.layer_norm":
        axes = [int(axis) for axis in call.attrs.axes]
        return axes in ([-1], [3]) and all(constant_value(arg) is not None for arg in call.args[1:])
    if name in BINARY_OPS and len(call.args) == 2:
        for arg in call.args:
            value = constant_value(arg)
            if value is None and not isinstance(arg, relax.Var):
                return False
            if value is not None and _channel_constant(value, channels) is None:
                return False
        return True
    return name in UNARY_OPS


@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    def __init__(self, mod):
        super().__init__(mod)
        self.plans: dict = {}  # binding var → ("entry" | "exit" | "op", stretch)
        self.rewritten = 0
        self.matmuls = 0
        self.seen_matmuls = 0
        self.positions: list = []  # which matmuls (in graph order) became convs

    def visit_dataflow_block_(self, block):
        for stretch in _find_stretches(block):
            self.rewritten += 1
            self.plans[stretch.entry] = ("entry", stretch)
            for var in stretch.ops:
                self.plans[var] = ("op", stretch)
            for var in stretch.exits:
                self.plans[var] = ("exit", stretch)
        return super().visit_dataflow_block_(block)

    def visit_var_binding_(self, binding):
        plan = self.plans.get(binding.var)
        if _op_name(binding.value) == "relax.matmul":
            if plan is not None:
                self.positions.append(self.seen_matmuls)
            self.seen_matmuls += 1
        if plan is None:
            return super().visit_var_binding_(binding)
        kind = plan[0]
        if kind in ("entry", "exit"):  # the NCHW value itself
            self.set_var_remap(binding.var, self.visit_expr(binding.value.args[0]))
            return
        new_var = self.builder_.emit(self._channels_first(binding.value), name_hint=binding.var.name)
        self.set_var_remap(binding.var, new_var)

    def _channels_first(self, call):
        name = _op_name(call)
        args = [self.visit_expr(arg) if constant_value(arg) is None else arg for arg in call.args]
        channels = int(call.ty.shape[3])
        if name == "relax.matmul":
            weight = constant_value(call.args[1])
            self.matmuls += 1
            kernel = np.ascontiguousarray(weight.T.reshape(weight.shape[1], weight.shape[0], 1, 1))
            return relax.op.nn.conv2d(args[0], relax.const(kernel, "float32"), data_layout="NCHW", kernel_layout="OIHW")
        if name == "relax.nn.layer_norm":  # lowering/channel_norms.py runs it in the blocked layout
            attrs = call.attrs
            return relax.op.nn.layer_norm(args[0], args[1], args[2], axes=[1], epsilon=float(attrs.epsilon), center=bool(attrs.center), scale=bool(attrs.scale))
        if name in BINARY_OPS:
            for index, arg in enumerate(call.args):
                value = constant_value(arg)
                if value is not None:
                    args[index] = relax.const(_channel_constant(value, channels), str(value.dtype))
        return relax.Call(call.op, args, call.attrs)


@tvm.transform.module_pass(opt_level=0, name="slimtvm.ChannelsFirst")
class ChannelsFirst:
    """Relax module pass: channels-last stretches between two transposes rewritten in NCHW (module
    doc); ``stretches`` and ``matmuls`` count what it rewrote, ``positions`` says which matmuls
    (their indices among the module's matmuls, in graph order) became convs."""

    def __init__(self):
        self.stretches = 0
        self.matmuls = 0
        self.positions: list = []

    def transform_module(self, mod, _ctx):
        rewriter = _Rewriter(mod)
        mod = rewrite_relax_functions(mod, rewriter)
        self.stretches, self.matmuls, self.positions = rewriter.rewritten, rewriter.matmuls, rewriter.positions
        return mod
