"""Fold inference-mode batch normalization into neighbouring linear layers, exactly.

In inference a BatchNormalization over channel axis ``c`` is an affine map per channel::

    bn(x)[c] = s[c] * x[c] + t[c],   s = gamma / sqrt(var + eps),   t = beta - mean * s

(``s`` and ``t`` are computed in float64 and rounded once). This pass removes it in every position
where the result stays exact up to float reassociation:

* **after** a layer (backward fold), when the BN is the layer's only user::

      conv(x, W) [+ b] → BN      ⇒  conv(x, W * s[o]) + (b * s + t)
      convT(x, W) [+ b] → BN     ⇒  convT(x, W * s[o]) + (b * s + t)     (W is IOHW, grouped)
      x @ W [+ b] → BN           ⇒  x @ (W * s[col]) + (b * s + t)       (Gemm / MatMul)

* **before** layers (forward fold), when every user of the BN output is a conv (any groups,
  stride, dilation, padding) or a matmul taking it as data::

      conv(BN(x), W) + b  ⇒  conv(x, W * s[i]) + b + B,    B[o, p] = Σ_{valid taps k at p} Σ_i W[o, i, k] t[i]

  Zero padding pads ``BN(x)``, not ``x``: at border positions some taps fall in the padding and
  carry 0 rather than ``t``. ``B`` therefore counts only the taps that land inside the image, so
  it is a per-channel constant when there is no padding and a per-position map (shape
  ``[1, O, OH, OW]``) at the borders otherwise. For matmul, ``B = t @ W``.

A BN that fits none of these (its input is shared, it follows a ReLU, its parameters are not
constants, its layout is not NCHW/OIHW, ...) is decomposed into ``x * s + t`` for later passes,
and the report says why. Folding is repeated until nothing changes, so chains such as
conv → BN → BN fold completely.

Refuses nothing: anything it does not understand is left as it was (and reported).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from ..conv_geometry import tap_positions
from .constants import constant_value

CONV_OPS = {"relax.nn.conv1d": 1, "relax.nn.conv2d": 2, "relax.nn.conv3d": 3}
CONV_TRANSPOSE_OPS = {"relax.nn.conv1d_transpose": 1, "relax.nn.conv2d_transpose": 2}
CONV_DATA_LAYOUTS = {"NCW", "NCHW", "NCDHW"}
CONV_KERNEL_LAYOUTS = {"OIW", "OIHW", "OIDHW"}
CONV_TRANSPOSE_KERNEL_LAYOUTS = {"IOW", "IOHW"}


@dataclass
class BatchNormFoldReport:
    """What the pass did with each batch_norm: counts by where it was folded, and why not."""

    folded: dict = field(default_factory=dict)  # position -> count
    not_folded: dict = field(default_factory=dict)  # reason -> count
    layers: list = field(default_factory=list)  # per batch_norm in graph order: what happened to it

    @property
    def folded_count(self) -> int:
        return sum(self.folded.values())

    @property
    def not_folded_count(self) -> int:
        return sum(self.not_folded.values())

    def to_json(self) -> dict:
        return {
            "batchnorms_folded": self.folded_count,
            "batchnorms_decomposed": self.not_folded_count,
            "folded_by_position": dict(sorted(self.folded.items())),
            "decomposed_because": dict(sorted(self.not_folded.items())),
            "layers": list(self.layers),
        }


@tvm.transform.module_pass(opt_level=0, name="slimtvm.FoldBatchNorm")
class FoldBatchNorm:
    """Relax module pass: fold every foldable ``relax.nn.batch_norm`` (see module docstring).

    Run it after ``FoldConstant`` so weights and BN parameters are constants. After the pass,
    ``self.report`` holds a :class:`BatchNormFoldReport` for the last module it transformed.
    """

    def __init__(self):
        self.report = BatchNormFoldReport()

    def transform_module(self, mod, _ctx):
        self.report = BatchNormFoldReport()
        updates = {}
        for gvar, func in mod.functions.items():
            if isinstance(func, relax.Function):
                updates[gvar] = _fold_function(func, mod, self.report)
        for gvar, func in updates.items():
            mod[gvar] = func
        return mod


# ----------------------------------------------------------------------------- graph view


class _Graph:
    """Bindings of one Relax function, with who-uses-what, for pattern checks by hand."""

    def __init__(self, func):
        self.value = {}  # Var -> bound expression
        self.users = {}  # Var -> list of Vars whose value reads it
        self.order = []
        for block in func.body.blocks:
            for binding in block.bindings:
                if not isinstance(binding, relax.VarBinding):
                    continue
                self.value[binding.var] = binding.value
                self.order.append(binding.var)
                for used in relax.analysis.free_vars(binding.value):
                    self.users.setdefault(used, []).append(binding.var)
        self.returned = set(relax.analysis.free_vars(func.body.body))

    def sole_user(self, var):
        """The one binding that reads ``var``, or None when it has several, none, or is returned."""
        users = self.users.get(var, [])
        if len(users) != 1 or var in self.returned:
            return None
        return users[0]

    def call(self, var, op_names):
        """``var``'s value if it is a call to one of ``op_names`` (Var or not), else None."""
        value = self.value.get(var) if isinstance(var, relax.Var) else None
        if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and value.op.name in op_names:
            return value
        return None


def _shape(expr):
    ty = expr.ty
    if isinstance(ty, relax.TensorType) and ty.shape is not None:
        try:
            return tuple(int(d) for d in ty.shape.values)
        except (TypeError, ValueError):
            return None
    return None


def _dtype(expr):
    ty = expr.ty
    return str(ty.dtype) if isinstance(ty, relax.TensorType) else None


# ----------------------------------------------------------------------------- BN parameters


@dataclass
class _BatchNorm:
    var: object  # the TupleGetItem(…, 0) var: the normalised tensor
    data: object  # input expression
    axis: int
    scale: np.ndarray  # s, float64
    shift: np.ndarray  # t, float64


def _batchnorm_calls(graph: _Graph):
    """(var, call) for every ``var = batch_norm(...)[0]`` binding, in order."""
    for var in graph.order:
        value = graph.value[var]
        if isinstance(value, relax.TupleGetItem) and value.index == 0:
            call = graph.call(value.tuple_value, {"relax.nn.batch_norm"})
            if call is not None:
                yield var, call


def _find_batchnorms(graph: _Graph) -> list:
    """Inference batch_norms with constant parameters and a static input shape."""
    found = []
    for var, call in _batchnorm_calls(graph):
        params = [constant_value(arg) for arg in call.args[1:5]]
        shape = _shape(call.args[0])
        if any(p is None for p in params) or shape is None:
            continue  # left for the decomposition step, which reports it
        gamma, beta, mean, var_ = (p.astype(np.float64) for p in params)
        attrs = call.attrs
        axis = int(attrs.axis) % len(shape)
        if not bool(attrs.scale):
            gamma = np.ones_like(gamma)
        if not bool(attrs.center):
            beta = np.zeros_like(beta)
        scale = gamma / np.sqrt(var_ + float(attrs.epsilon))
        found.append(_BatchNorm(var, call.args[0], axis, scale, beta - mean * scale))
    return found


# ----------------------------------------------------------------------------- fold plans
# A plan is a list of (binding var, builder) pairs: the binding's value is replaced by
# builder(mutator), which may emit helper bindings first. The old producer/BN bindings become
# dead and are removed afterwards.


def _channel_shape(ndim: int, axis: int, channels: int) -> tuple:
    shape = [1] * ndim
    shape[axis] = channels
    return tuple(shape)


def _layer_with_bias(graph: _Graph, var, layer_ops):
    """(layer call, layer var, bias ndarray or None, bias-add var or None) for ``var``'s producer.

    Accepts ``layer(...)`` or ``add(layer(...), const)`` where the layer output has no other user.
    """
    layer = graph.call(var, layer_ops)
    if layer is not None:
        return layer, var, None, None
    add = graph.call(var, {"relax.add"})
    if add is None:
        return None
    lhs, rhs = add.args
    if constant_value(lhs) is not None and isinstance(rhs, relax.Var):
        lhs, rhs = rhs, lhs
    bias = constant_value(rhs)
    layer = graph.call(lhs, layer_ops)
    if layer is None or bias is None or graph.sole_user(lhs) is None:
        return None
    return layer, lhs, bias, var


def _plan_backward(graph: _Graph, bn: _BatchNorm):
    """Fold ``bn`` into the layer that produces its input; returns (position, plan, bindings read) or None."""
    data = bn.data
    if not isinstance(data, relax.Var) or graph.sole_user(data) is None:
        return None
    out_shape = _shape(data)
    ops = set(CONV_OPS) | set(CONV_TRANSPOSE_OPS) | {"relax.matmul"}
    found = _layer_with_bias(graph, data, ops)
    if found is None:
        return None
    layer, layer_var, bias, _ = found
    op = layer.op.name
    weight = constant_value(layer.args[1])
    if weight is None or str(weight.dtype) != _dtype(data):
        return None
    channels = out_shape[bn.axis]
    s, t = bn.scale, bn.shift
    if op in CONV_OPS:
        attrs = layer.attrs
        if bn.axis != 1 or attrs.data_layout not in CONV_DATA_LAYOUTS or attrs.kernel_layout not in CONV_KERNEL_LAYOUTS:
            return None
        if str(attrs.out_layout) != str(attrs.data_layout):
            return None
        new_weight = weight * s.reshape((-1,) + (1,) * (weight.ndim - 1))
        position = "conv_then_bn"
    elif op in CONV_TRANSPOSE_OPS:
        attrs = layer.attrs
        if bn.axis != 1 or attrs.data_layout not in CONV_DATA_LAYOUTS or attrs.kernel_layout not in CONV_TRANSPOSE_KERNEL_LAYOUTS:
            return None
        groups = int(attrs.groups)
        cin, cout_g = weight.shape[:2]
        grouped = weight.reshape((groups, cin // groups, cout_g) + weight.shape[2:])
        grouped = grouped * s.reshape((groups, 1, cout_g) + (1,) * (weight.ndim - 2))
        new_weight = grouped.reshape(weight.shape)
        position = "conv_transpose_then_bn"
    else:  # matmul: x[..., K] @ W[K, N]; the BN channel must be N, the last axis
        if weight.ndim != 2 or bn.axis != len(out_shape) - 1:
            return None
        new_weight = weight * s.reshape(1, -1)
        position = "gemm_then_bn"
    # Any constant bias that broadcasts to the output folds too (per channel, or a per-position
    # border map left by an earlier forward fold): bias * s + t.
    channel_shape = _channel_shape(len(out_shape), bn.axis, channels)
    old_bias = np.zeros(channel_shape) if bias is None else bias.astype(np.float64)
    try:
        if np.broadcast_shapes(old_bias.shape, channel_shape, out_shape) != tuple(out_shape):
            return None
    except ValueError:
        return None
    new_bias = old_bias * s.reshape(channel_shape) + t.reshape(channel_shape)
    dtype = weight.dtype
    builder = _rebuild_layer(layer, new_weight.astype(dtype), new_bias.astype(dtype))
    return position, [(bn.var, builder)], {bn.var, data, layer_var}


def _plan_forward(graph: _Graph, bn: _BatchNorm):
    """Fold ``bn`` into every layer that reads its output; returns (position, plan, bindings read) or None."""
    users = graph.users.get(bn.var, [])
    if not users or bn.var in graph.returned:
        return None
    plan, positions, touched = [], set(), {bn.var}
    for user in users:
        step = _plan_forward_one(graph, bn, user)
        if step is None:
            return None
        position, binding_var, builder = step
        positions.add(position)
        plan.append((binding_var, builder))
        touched |= {user, binding_var}
    return "+".join(sorted(positions)), plan, touched


def _plan_forward_one(graph: _Graph, bn: _BatchNorm, user):
    layer = graph.call(user, set(CONV_OPS) | {"relax.matmul"})
    if layer is None or not layer.args[0].same_as(bn.var) or layer.args[1].same_as(bn.var):
        return None
    weight = constant_value(layer.args[1])
    out_shape = _shape(user)
    if weight is None or out_shape is None:
        return None
    s, t = bn.scale, bn.shift
    if layer.op.name in CONV_OPS:
        attrs = layer.attrs
        if bn.axis != 1 or attrs.data_layout not in CONV_DATA_LAYOUTS or attrs.kernel_layout not in CONV_KERNEL_LAYOUTS:
            return None
        if str(attrs.out_layout) != str(attrs.data_layout):
            return None
        groups = int(attrs.groups)
        cout, cin_g = weight.shape[:2]
        spatial = weight.ndim - 2
        in_channel = (np.arange(cout) // (cout // groups))[:, None] * cin_g + np.arange(cin_g)[None, :]  # [O, I/g]
        per_in = (slice(None), slice(None)) + (None,) * spatial
        new_weight = weight * s[in_channel][per_in]
        taps = np.einsum("oi...,oi->o...", weight.astype(np.float64), t[in_channel])  # [O, k...]
        extra = _border_bias(taps, _shape(bn.var)[2:], out_shape[2:], attrs)
        position = "bn_then_conv"
    else:
        if weight.ndim != 2 or bn.axis != len(_shape(bn.var)) - 1:
            return None
        new_weight = weight * s.reshape(-1, 1)
        extra = (t @ weight.astype(np.float64)).reshape((1,) * (len(out_shape) - 1) + (-1,))
        position = "bn_then_gemm"
    dtype = weight.dtype
    # merge with a bias add that follows the layer, if the layer has no other user
    add_var = graph.sole_user(user)
    add = graph.call(add_var, {"relax.add"}) if add_var is not None else None
    if add is not None:
        others = [arg for arg in add.args if not arg.same_as(user)]
        bias = constant_value(others[0]) if len(others) == 1 else None
        if bias is not None and np.broadcast_shapes(bias.shape, extra.shape, out_shape) == tuple(out_shape):
            merged = np.broadcast_to(bias.astype(np.float64), np.broadcast_shapes(bias.shape, extra.shape)) + extra
            builder = _rebuild_layer(layer, new_weight.astype(dtype), merged.astype(dtype), data=bn.data)
            return position, add_var, builder
    builder = _rebuild_layer(layer, new_weight.astype(dtype), extra.astype(dtype), data=bn.data)
    return position, user, builder


def _border_bias(taps: np.ndarray, in_size: tuple, out_size: tuple, attrs) -> np.ndarray:
    """Σ over taps that land inside the input of ``taps[o, k...]``, per output position.

    Returns shape ``[1, O, 1, ...]`` when every tap is always inside (no effective padding),
    else ``[1, O, out...]``.
    """
    spatial = len(in_size)
    strides = [int(v) for v in attrs.strides]
    dilation = [int(v) for v in attrs.dilation]
    pad_before = [int(v) for v in attrs.padding[:spatial]]
    masks = []
    for dim in range(spatial):
        kernel = taps.shape[1 + dim]
        rows = tap_positions(out_size[dim], kernel, strides[dim], dilation[dim], pad_before[dim])
        masks.append(((rows >= 0) & (rows < in_size[dim])).astype(np.float64))  # [out, k]
    if all(mask.all() for mask in masks):
        total = taps.reshape(taps.shape[0], -1).sum(axis=1)
        return total.reshape((1, -1) + (1,) * spatial)
    letters = "abc"[:spatial]
    outs = "xyz"[:spatial]
    spec = "o" + letters + "," + ",".join(f"{outs[d]}{letters[d]}" for d in range(spatial)) + "->o" + outs
    bias_map = np.einsum(spec, taps, *masks)
    return bias_map[None]


def _rebuild_layer(layer, weight: np.ndarray, bias: np.ndarray, data=None):
    """Builder emitting ``layer(data or layer's data, weight) + bias`` with the layer's attributes."""

    def build(mutator):
        new_data = mutator.visit_expr(data if data is not None else layer.args[0])
        call = relax.Call(layer.op, [new_data, relax.const(weight)], layer.attrs, layer.ty_args)
        new_layer = mutator.builder_.emit(call)
        return relax.op.add(new_layer, relax.const(bias))

    return build


def _plan_decompose(bn: _BatchNorm, ndim: int, dtype: str):
    shape = _channel_shape(ndim, bn.axis, bn.scale.size)
    scale = relax.const(bn.scale.reshape(shape).astype(dtype))
    shift = relax.const(bn.shift.reshape(shape).astype(dtype))

    def build(mutator):
        scaled = mutator.builder_.emit(relax.op.multiply(mutator.visit_expr(bn.data), scale))
        return relax.op.add(scaled, shift)

    return [(bn.var, build)]


def _describe_fold(position: str) -> str:
    """``conv_then_bn`` → "folded back into the conv before it", ``bn_then_conv+bn_then_gemm`` →
    "folded forward into the conv and gemm after it"."""
    parts = position.split("+")
    layers = " and ".join(sorted({part.replace("_then_bn", "").replace("bn_then_", "").replace("_", " ") for part in parts}))
    return f"folded back into the {layers} before it" if parts[0].endswith("_then_bn") else f"folded forward into the {layers} after it"


def _why_not(graph: _Graph, bn: _BatchNorm) -> str:
    """A short reason why neither fold applies (for the report)."""
    producer = graph.value.get(bn.data) if isinstance(bn.data, relax.Var) else None
    if isinstance(producer, relax.Call) and isinstance(producer.op, tvm.ir.Op):
        name = producer.op.name.replace("relax.", "").replace("nn.", "")
        if graph.sole_user(bn.data) is None and name in {"conv2d", "conv1d", "conv3d", "matmul", "add", "conv2d_transpose"}:
            return f"input from {name} is also used elsewhere"
        return f"follows {name}, and not every user is a conv or matmul"
    if isinstance(bn.data, relax.Var) and bn.data not in graph.value:
        return "reads a graph input, and not every user is a conv or matmul"
    return "not every user is a conv or matmul"


# ----------------------------------------------------------------------------- driver


@relax.expr_functor.mutator
class _ReplaceBindings(relax.PyExprMutator):
    """Replace the values of chosen bindings, keeping their vars (so their users need no change)."""

    def __init__(self, mod, plan: dict):
        super().__init__(mod)
        self.plan = plan

    def visit_var_binding_(self, binding):
        builder = self.plan.get(binding.var)
        if builder is None:
            super().visit_var_binding_(binding)
            return
        value = self.builder_.normalize(builder(self))
        self.builder_.emit_normalized(relax.VarBinding(binding.var, value))


def _apply(func, mod, plan_items):
    plan = dict(plan_items)
    new_func = _ReplaceBindings(mod, plan).visit_expr(func)
    return relax.analysis.remove_all_unused(new_func)


def _fold_function(func, mod, report: BatchNormFoldReport):
    func = relax.analysis.remove_all_unused(func)
    # Bindings keep their vars through the rewrites, so a BN's var names it in every round.
    order = {var: index for index, (var, _) in enumerate(_batchnorm_calls(_Graph(func)))}
    decisions = {}
    # Each round folds a set of BNs that touch disjoint bindings; repeat until none is left.
    for _ in range(64):
        graph = _Graph(func)
        plan_items, touched = [], set()
        for bn in _find_batchnorms(graph):
            step = _plan_backward(graph, bn) or _plan_forward(graph, bn)
            if step is None:
                continue
            position, items, keys = step
            if keys & touched:
                continue  # overlaps a fold of this round; retried next round
            touched |= keys
            plan_items.extend(items)
            report.folded[position] = report.folded.get(position, 0) + 1
            decisions[order.get(bn.var)] = _describe_fold(position)
        if not plan_items:
            break
        func = _apply(func, mod, plan_items)
    # What is left cannot be folded: decompose into multiply + add, and say why.
    graph = _Graph(func)
    readable = {bn.var: bn for bn in _find_batchnorms(graph)}
    plan_items = []
    for var, call in _batchnorm_calls(graph):
        bn = readable.get(var)
        if bn is None:
            reason = "parameters are not constants" if _shape(call.args[0]) is not None else "input shape is not static"
            report.not_folded[reason] = report.not_folded.get(reason, 0) + 1
            decisions[order.get(var)] = f"kept as batch_norm: {reason}"
            continue
        reason = _why_not(graph, bn)
        report.not_folded[reason] = report.not_folded.get(reason, 0) + 1
        decisions[order.get(var)] = f"decomposed to multiply + add: {reason}"
        plan_items.extend(_plan_decompose(bn, len(_shape(bn.data)), _dtype(bn.data)))
    if plan_items:
        func = _apply(func, mod, plan_items)
    report.layers.extend(decisions.get(index, "decision not recorded") for index in range(len(order)))
    return func
