"""Remove the channels a pruned network computes for nothing, exactly: constant and unread ones.

Two kinds of channel cost multiply-adds without carrying information:

* **constant channels.** A filter whose weights are all zero outputs 0 whatever the input; its bias,
  a folded BN shift, a ReLU keep the channel constant (``torch.nn.utils.prune.ln_structured``,
  network slimming's γ = 0). Through a zero-padded conv or pool the constant becomes a
  per-position map (:mod:`slimtvm.passes.constant_channel_maps`). A consumer conv or matmul
  absorbs such a channel: its contribution ``Σ_taps W[o, i, k] · map_i`` is a constant added to
  the consumer's bias (per position where the consumer pads), and the channel is no longer read.
* **unread channels.** A channel whose weight column is zero in every consumer (a dead input) is
  not read at all.

A channel nobody reads is not computed: the producing conv or matmul loses its filter, and
channel-wise ops on the way (bias adds, BN remains, ReLU/Clip/SiLU, pools, depthwise convs,
concats along channels, the global-average-pool → reshape → matmul head) shrink with it. Whatever
needs the channel keeps it: a residual add with a non-constant operand, an op this pass does not
understand, a model output. The report says what was removed and, for constant channels that
stay, why.

Works on NCHW ``relax.nn.conv2d`` (groups 1, or depthwise with one filter per channel) and 2-D
``relax.matmul`` with constant weights, after BN and constant folding. Lossless up to float
reassociation (the absorbed constants are computed in float64 and rounded once). Refuses nothing:
what it does not understand is left as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from .constant_channel_maps import BINARY, UNARY, conv_of_maps, depthwise_of_maps, pool_of_maps
from .constants import constant_value
from .static_shapes import static_shape

POOLS = {"relax.nn.max_pool2d": "max", "relax.nn.avg_pool2d": "avg"}


@dataclass
class LayerChannels:
    """What the pass did to one conv2d/matmul: channels ``out``/``in`` before → after, input
    channels ``absorbed`` as constants, input channels ``unread`` (zero weight column)."""

    op: str
    out_before: int
    out_after: int
    in_before: int
    in_after: int
    absorbed: int
    unread: int
    macs_before: int
    macs_after: int

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class DeadChannelReport:
    """Per layer in graph order, and the constant conv/matmul output channels that stayed (why)."""

    layers: list = field(default_factory=list)  # LayerChannels
    constant_kept: dict = field(default_factory=dict)  # reason -> channels

    @property
    def channels_removed(self) -> int:
        return sum(layer.out_before - layer.out_after for layer in self.layers)

    def to_json(self) -> dict:
        before = sum(layer.macs_before for layer in self.layers)
        after = sum(layer.macs_after for layer in self.layers)
        return {
            "layers_shrunk": sum(1 for layer in self.layers if (layer.out_before, layer.in_before) != (layer.out_after, layer.in_after)),
            "filters_removed": self.channels_removed,
            "input_channels_removed": sum(layer.in_before - layer.in_after for layer in self.layers),
            "constants_absorbed": sum(layer.absorbed for layer in self.layers),
            "macs_before": before,
            "macs_after": after,
            "constant_channels_kept": dict(sorted(self.constant_kept.items())),
            "layers": [layer.to_json() for layer in self.layers],
        }


@tvm.transform.module_pass(opt_level=0, name="slimtvm.RemoveDeadChannels")
class RemoveDeadChannels:
    """Relax module pass: remove constant and unread channels (module docstring); ``report`` holds
    a :class:`DeadChannelReport` for the last module transformed."""

    def __init__(self):
        self.report = DeadChannelReport()

    def transform_module(self, mod, _ctx):
        self.report = DeadChannelReport()
        updates = {}
        for gvar, func in mod.functions.items():
            if isinstance(func, relax.Function):
                plan = _Plan(func, self.report)
                if plan.changes_anything():
                    updates[gvar] = relax.analysis.remove_all_unused(_Shrink(mod, plan).visit_expr(func))
        for gvar, func in updates.items():
            mod[gvar] = func
        return mod


# ----------------------------------------------------------------------------- the graph


def _op_name(value) -> str:
    return value.op.name if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) else ""


@dataclass
class _Layer:
    """One binding seen by the pass: ``kind`` is conv, depthwise, matmul, channelwise, concat or
    opaque; ``inputs`` the channel-aligned tensor vars it reads."""

    kind: str
    call: object = None
    inputs: tuple = ()
    weight: np.ndarray | None = None
    constants: tuple = ()  # channelwise: per arg, the constant broadcast to the output rank, or None


class _Plan:
    """The analysis of one function: constant channel maps (forward), channels needed (backward),
    and the rewrite of each binding."""

    def __init__(self, func, report: DeadChannelReport):
        self.report = report
        self.shape = {}  # var -> static NCHW / NC shape
        self.layers = {}
        self.order = []
        self.users = {}
        for block in func.body.blocks:
            for binding in block.bindings:
                if not isinstance(binding, relax.VarBinding):
                    continue
                self.order.append(binding.var)
                for used in relax.analysis.free_vars(binding.value):
                    self.users.setdefault(used, []).append(binding.var)
        for param in func.params:
            self._note_shape(param)
        for var in self.order:
            self._note_shape(var)
        self.returned = set(relax.analysis.free_vars(func.body.body))
        bound = {b.var: b.value for block in func.body.blocks for b in block.bindings if isinstance(b, relax.VarBinding)}
        for var in self.order:
            self.layers[var] = self._classify(var, bound[var])
        self.constant = {param: {} for param in func.params}  # var -> {channel: float64 map}
        for var in self.order:
            self.constant[var] = self._constant_channels(var)
        self.kept = self._kept_channels()
        self._report()

    def _note_shape(self, var):
        shape = static_shape(var, "float32")
        shape = tuple(shape) if shape is not None else None
        if shape is not None and len(shape) in (2, 4):
            self.shape[var] = shape

    def channels(self, var) -> int:
        return self.shape[var][1]

    def spatial(self, var) -> tuple:
        return self.shape[var][2:]

    # ------------------------------------------------------------------ classification

    def _aligned(self, arg, out) -> bool:
        return isinstance(arg, relax.Var) and arg in self.shape and len(self.shape[arg]) == len(self.shape[out]) and self.channels(arg) == self.channels(out)

    def _classify(self, var, value) -> _Layer:
        opaque = _Layer("opaque", value)
        if var not in self.shape or not isinstance(value, relax.Call):
            return opaque
        name = _op_name(value)
        args = list(value.args)
        if name == "relax.nn.conv2d":
            weight = constant_value(args[1])
            attrs = value.attrs
            layouts = (str(attrs.data_layout), str(attrs.kernel_layout), str(attrs.out_layout))
            if weight is None or weight.dtype != np.float32 or layouts != ("NCHW", "OIHW", "NCHW") or args[0] not in self.shape:
                return opaque
            groups, cin = int(attrs.groups), self.channels(args[0])
            if groups == 1:
                return _Layer("conv", value, (args[0],), weight)
            if groups == cin == weight.shape[0] and weight.shape[1] == 1:
                return _Layer("depthwise", value, (args[0],), weight)
            return opaque
        if name == "relax.matmul":
            weight = constant_value(args[1])
            if weight is None or weight.dtype != np.float32 or weight.ndim != 2 or args[0] not in self.shape or len(self.shape[args[0]]) != 2:
                return opaque
            return _Layer("matmul", value, (args[0],), weight)
        if name in UNARY:
            if not self._aligned(args[0], var) or any(isinstance(a, relax.Var) for a in args[1:]):
                return opaque
            return _Layer("channelwise", value, (args[0],))
        if name in BINARY:
            inputs, constants = [], []
            for arg in args:
                const = constant_value(arg)
                if const is not None:
                    if const.ndim > len(self.shape[var]):
                        return opaque
                    const = const.reshape((1,) * (len(self.shape[var]) - const.ndim) + const.shape)
                    constants.append(const.astype(np.float64))
                elif self._aligned(arg, var):
                    inputs.append(arg)
                    constants.append(None)
                else:
                    return opaque
            return _Layer("channelwise", value, tuple(inputs), constants=tuple(constants))
        if name in POOLS:
            attrs = value.attrs
            if str(attrs.layout) != "NCHW" or str(attrs.out_layout) != "NCHW" or not self._aligned(args[0], var):
                return opaque
            return _Layer("channelwise", value, (args[0],))
        if name == "relax.mean":
            axes = sorted(int(a) % 4 for a in value.attrs.axis) if value.attrs.axis is not None else []
            if args[0] in self.shape and len(self.shape[args[0]]) == 4 and axes == [2, 3] and self.channels(args[0]) == self.channels(var):
                return _Layer("channelwise", value, (args[0],))
            return opaque
        if name == "relax.reshape":
            src = args[0]
            if src in self.shape and self.shape[src][:2] == self.shape[var][:2] and int(np.prod(self.shape[src][2:])) == 1 == int(np.prod(self.shape[var][2:])):
                return _Layer("channelwise", value, (src,))
            return opaque
        if name == "relax.concat":
            parts = args[0]
            axis = int(value.attrs.axis) % len(self.shape[var]) if value.attrs.axis is not None else -1
            if axis != 1 or not isinstance(parts, relax.Tuple):
                return opaque
            fields = list(parts.fields)
            if not all(isinstance(f, relax.Var) and f in self.shape and self.shape[f][2:] == self.shape[var][2:] for f in fields):
                return opaque
            return _Layer("concat", value, tuple(fields))
        return opaque

    # ------------------------------------------------------------------ constants (forward)

    def _maps(self, var, channels) -> np.ndarray:
        spatial = self.spatial(var)
        return np.stack([self.constant[var][c] for c in channels]) if len(channels) else np.zeros((0,) + spatial)

    def _const_mask(self, var) -> np.ndarray:
        mask = np.zeros(self.channels(var), bool)
        for c in self.constant.get(var, {}):
            mask[c] = True
        return mask

    def _constant_channels(self, var) -> dict:
        layer = self.layers[var]
        if layer.kind == "opaque":
            return {}
        out_spatial = self.spatial(var)
        if layer.kind in ("conv", "matmul"):
            src = layer.inputs[0]
            weight = layer.weight
            cmask = self._const_mask(src)
            nonzero = weight != 0
            if layer.kind == "conv":
                reads_variable = nonzero[:, ~cmask].reshape(weight.shape[0], -1).any(axis=1)
                rows = np.flatnonzero(~reads_variable)
                if rows.size == 0:
                    return {}
                attrs = layer.call.attrs
                maps = conv_of_maps(weight[rows][:, cmask], self._maps(src, np.flatnonzero(cmask)), out_spatial, attrs)
                return {int(o): maps[k] for k, o in enumerate(rows)}
            reads_variable = nonzero[~cmask].any(axis=0)
            cols = np.flatnonzero(~reads_variable)
            values = np.array([self.constant[src][k] for k in np.flatnonzero(cmask)]).reshape(-1)
            sums = values @ weight[cmask][:, cols].astype(np.float64) if values.size else np.zeros(cols.size)
            return {int(m): np.asarray(sums[k]) for k, m in enumerate(cols)}
        if layer.kind == "depthwise":
            src = layer.inputs[0]
            channels = [c for c in range(self.channels(var)) if c in self.constant[src] or not layer.weight[c].any()]
            if not channels:
                return {}
            attrs = layer.call.attrs
            maps = np.stack([self.constant[src].get(c, np.zeros(self.spatial(src))) for c in channels])
            values = depthwise_of_maps(layer.weight[channels], maps, out_spatial, attrs)
            return {c: values[k] for k, c in enumerate(channels)}
        if layer.kind == "concat":
            found, offset = {}, 0
            for part in layer.inputs:
                for c, value in self.constant[part].items():
                    found[offset + c] = value
                offset += self.channels(part)
            return found
        return self._channelwise_constants(var, layer, out_spatial)

    def _channelwise_constants(self, var, layer, out_spatial) -> dict:
        call, name = layer.call, _op_name(layer.call)
        common = set(range(self.channels(var)))
        for src in layer.inputs:
            common &= set(self.constant[src])
        if not common:
            return {}
        channels = sorted(common)
        if name in UNARY:
            return {c: np.broadcast_to(UNARY[name](self.constant[layer.inputs[0]][c], call), out_spatial).copy() for c in channels}
        if name in BINARY:
            if any(const is not None and const.shape[0] != 1 for const in layer.constants):
                return {}  # a constant that differs per image
            found = {}
            for c in channels:
                operands, inputs = [], iter(layer.inputs)
                for const in layer.constants:
                    if const is None:
                        operands.append(self.constant[next(inputs)][c])
                    else:
                        operands.append(const[0, c if const.shape[1] > 1 else 0])
                found[c] = np.broadcast_to(BINARY[name](*operands), out_spatial).copy()
            return found
        src = layer.inputs[0]
        if name in POOLS:
            values = pool_of_maps(POOLS[name], self._maps(src, channels), out_spatial, call.attrs)
            return {c: values[k] for k, c in enumerate(channels)}
        # mean over the spatial axes, or a reshape between [N, C, 1, 1] and [N, C]
        return {c: np.full(out_spatial, self.constant[src][c].mean()) for c in channels}

    # ------------------------------------------------------------------ channels kept (backward)

    def _kept_channels(self) -> dict:
        needed = {var: np.zeros(shape[1], bool) for var, shape in self.shape.items()}
        for var in self.returned:
            if var in needed:
                needed[var][:] = True
        kept = {}
        for var in reversed(self.order):
            layer = self.layers[var]
            if var in self.shape:
                kept[var] = needed[var] if layer.kind != "opaque" else np.ones(self.channels(var), bool)
            if layer.kind == "opaque":
                for used in relax.analysis.free_vars(layer.call) if layer.call is not None else []:
                    if used in needed:
                        needed[used][:] = True
                continue
            out = kept[var]
            if layer.kind in ("conv", "matmul"):
                src = layer.inputs[0]
                nonzero = layer.weight != 0
                if layer.kind == "conv":
                    read = nonzero[out].transpose(1, 0, 2, 3).reshape(nonzero.shape[1], -1).any(axis=1)
                else:
                    read = nonzero[:, out].any(axis=1)
                needed[src] |= read & ~self._const_mask(src)
            elif layer.kind == "concat":
                offset = 0
                for part in layer.inputs:
                    needed[part] |= out[offset : offset + self.channels(part)]
                    offset += self.channels(part)
            else:
                for src in layer.inputs:
                    needed[src] |= out
        for param in self.shape:
            kept.setdefault(param, np.ones(self.channels(param), bool))
        return kept

    def changes_anything(self) -> bool:
        return any(not kept.all() for kept in self.kept.values())

    # ------------------------------------------------------------------ report

    def _report(self) -> None:
        """One :class:`LayerChannels` per conv2d / matmul binding in graph order (every one, so
        that the k-th entry is the model's k-th Conv or Gemm/MatMul), then the kept constants."""
        for var in self.order:
            layer = self.layers[var]
            if _op_name(layer.call) not in ("relax.nn.conv2d", "relax.matmul"):
                continue
            if layer.kind not in ("conv", "matmul"):
                out = self.kept.get(var)
                src = layer.call.args[0]
                kept_in = self.kept.get(src) if isinstance(src, relax.Var) else None
                out_count = (int(out.size), int(out.sum())) if out is not None else (0, 0)
                in_count = (int(kept_in.size), int(kept_in.sum())) if kept_in is not None else (0, 0)
                self.report.layers.append(LayerChannels(_op_name(layer.call).replace("relax.nn.", "").replace("relax.", ""), *out_count, *in_count, 0, 0, 0, 0))
                continue
            src, out = layer.inputs[0], self.kept[var]
            kept_in = self.kept[src]
            nonzero = layer.weight != 0
            if layer.kind == "conv":
                read = nonzero[out].transpose(1, 0, 2, 3).reshape(nonzero.shape[1], -1).any(axis=1)
                per_pixel = int(np.prod(self.shape[var][2:])) * self.shape[var][0] * int(np.prod(layer.weight.shape[2:]))
            else:
                read = nonzero[:, out].any(axis=1)
                per_pixel = self.shape[var][0]
            absorbed = int((read & ~kept_in).sum())
            self.report.layers.append(
                LayerChannels(
                    _op_name(layer.call).replace("relax.nn.", "").replace("relax.", ""),
                    int(out.size),
                    int(out.sum()),
                    int(kept_in.size),
                    int(kept_in.sum()),
                    absorbed,
                    int((~read & ~kept_in).sum()),
                    int(out.size * kept_in.size * per_pixel),
                    int(out.sum() * kept_in.sum() * per_pixel),
                )
            )
            for c in self.constant[var]:
                if out[c]:
                    reason = self._why_kept(var, c)
                    self.report.constant_kept[reason] = self.report.constant_kept.get(reason, 0) + 1

    def _why_kept(self, var, channel, depth: int = 0) -> str:
        """Why constant ``channel`` of ``var`` is still computed: follow the users that need it."""
        if var in self.returned:
            return "a model output"
        for user in self.users.get(var, []):
            layer = self.layers[user]
            if layer.kind == "opaque":
                return f"read by {_op_name(layer.call).replace('relax.', '') or 'a non-call binding'}"
            if layer.kind in ("conv", "matmul") or user not in self.shape:
                continue
            mapped = channel
            if layer.kind == "concat":
                mapped = sum(self.channels(p) for p in layer.inputs[: list(layer.inputs).index(var)]) + channel
            if not self.kept[user][mapped]:
                continue
            if mapped not in self.constant[user]:
                return f"joined with a non-constant channel in {_op_name(layer.call).replace('relax.', '')}"
            if depth < 64:
                return self._why_kept(user, mapped, depth + 1)
        return "read by a layer that reads it as a variable"

    # ------------------------------------------------------------------ rewrite

    def rebuild(self, var, mutator):
        """The new value of ``var``'s binding (reading the rewritten vars), or None to keep it."""
        layer = self.layers[var]
        if layer.kind == "opaque":
            return None
        out = self.kept[var]
        touched = not out.all() or any(not self.kept[src].all() or src in mutator.pending_bias for src in layer.inputs)
        if layer.kind in ("conv", "matmul"):
            return self._rebuild_layer(var, layer, mutator) if touched else None
        if not touched:
            return None
        call = layer.call
        if layer.kind == "depthwise":
            data = self._take(mutator, layer.inputs[0], out)
            attrs = call.attrs
            out_dtype = str(attrs.out_dtype)
            return relax.op.nn.conv2d(
                data,
                relax.const(layer.weight[out]),
                strides=attrs.strides,
                padding=attrs.padding,
                dilation=attrs.dilation,
                groups=int(out.sum()),
                data_layout="NCHW",
                kernel_layout="OIHW",
                out_layout="NCHW",
                out_dtype=None if out_dtype in ("", "void", "None") else out_dtype,
            )
        if layer.kind == "concat":
            parts, offset = [], 0
            for part in layer.inputs:
                wanted = out[offset : offset + self.channels(part)]
                offset += self.channels(part)
                if wanted.any():
                    parts.append(self._take(mutator, part, wanted))
            return relax.op.concat(parts, axis=1)
        name = _op_name(call)
        if name == "relax.reshape":
            shape = list(self.shape[var])
            shape[1] = int(out.sum())
            return relax.op.reshape(self._take(mutator, layer.inputs[0], out), shape)
        if name in BINARY:
            args, inputs = [], iter(layer.inputs)
            for arg, const in zip(call.args, layer.constants):
                if const is None:
                    args.append(self._take(mutator, next(inputs), out))
                elif const.shape[1] == out.size > 1:
                    args.append(relax.const(const[:, out].astype(constant_value(arg).dtype)))
                else:
                    args.append(mutator.visit_expr(arg))
            for index, arg in enumerate(call.args):
                extra = mutator.pending_bias.pop(arg, None)
                if extra is not None:  # the absorbed constants of the layer before: merged into its bias
                    other = 1 - index
                    bias = layer.constants[other]
                    bias = bias[:, out] if bias.shape[1] == out.size > 1 else bias
                    args[other] = relax.const((bias + extra).astype(constant_value(call.args[other]).dtype))
            return relax.Call(call.op, args, call.attrs, call.ty_args)
        args = [self._take(mutator, layer.inputs[0], out)] + [mutator.visit_expr(a) for a in call.args[1:]]
        return relax.Call(call.op, args, call.attrs, call.ty_args)

    def _take(self, mutator, src, wanted: np.ndarray):
        """``src`` rewritten, reduced to the ``wanted`` of its original channels."""
        new = mutator.visit_expr(src)
        kept = self.kept[src]
        if np.array_equal(kept, wanted):
            return new
        index = np.cumsum(kept) - 1
        positions = index[np.flatnonzero(wanted)]
        # "clip": the positions are in bounds by construction; TVM's default "fast" mode prints a
        # warning about out-of-bounds indices at every compile, and the clamp costs nothing here
        return mutator.builder_.emit(relax.op.take(new, relax.const(positions.astype("int64")), axis=1, mode="clip"))

    def _rebuild_layer(self, var, layer, mutator):
        src, out = layer.inputs[0], self.kept[var]
        kept_in = self.kept[src]
        weight = layer.weight
        call = layer.call
        absorbed = np.flatnonzero(~kept_in & self._const_mask(src))
        if layer.kind == "conv":
            attrs = call.attrs
            new_weight = weight[out][:, kept_in]
            extra = conv_of_maps(weight[out][:, absorbed], self._maps(src, absorbed), self.spatial(var), attrs)
            extra = extra[None] if extra.size and np.ptp(extra.reshape(extra.shape[0], -1), axis=1).any() else extra[:, :1, :1][None]
        else:
            new_weight = weight[kept_in][:, out]
            values = np.array([self.constant[src][k] for k in absorbed]).reshape(-1)
            extra = (values @ weight[absorbed][:, out].astype(np.float64))[None] if values.size else np.zeros((1, int(out.sum())))
        if not absorbed.size:
            extra = None
        shape = list(self.shape[var])
        shape[1] = int(out.sum())
        if not kept_in.any():
            value = np.zeros(shape) if extra is None else np.broadcast_to(extra, shape)
            return relax.const(np.ascontiguousarray(value).astype("float32"))
        new_call = relax.Call(call.op, [mutator.visit_expr(src), relax.const(new_weight)], call.attrs, call.ty_args)
        if extra is None:
            return new_call
        users = self.users.get(var, [])
        bias_add = self.layers[users[0]] if len(users) == 1 else None
        if (
            var not in self.returned
            and bias_add is not None
            and _op_name(bias_add.call) == "relax.add"
            and bias_add.kind == "channelwise"
            and None in bias_add.constants
            and any(c is not None for c in bias_add.constants)
        ):
            mutator.pending_bias[var] = extra
            return new_call
        layer_var = mutator.builder_.emit(new_call)
        return relax.op.add(layer_var, relax.const(extra.astype("float32")))


@relax.expr_functor.mutator
class _Shrink(relax.PyExprMutator):
    """Re-emit the function with each binding rebuilt by the plan (new vars where shapes change)."""

    def __init__(self, mod, plan: _Plan):
        super().__init__(mod)
        self.plan = plan
        self.pending_bias = {}  # original layer var -> constant its bias add must add

    def visit_var_binding_(self, binding):
        var = binding.var
        plan = self.plan
        if var in plan.kept and not plan.kept[var].any():
            return  # nobody reads it
        value = plan.rebuild(var, self)
        if value is None:
            super().visit_var_binding_(binding)
            return
        if isinstance(var, relax.DataflowVar):
            new_var = self.builder_.emit(value, var.name)
        else:
            new_var = self.builder_.emit_output(value, var.name)
        self.set_var_remap(var, new_var)
