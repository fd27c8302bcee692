"""Zero-pad convolution channels to the target's channel block, so a whole model takes it.

A conv whose output channels are not a multiple of the block (MobileNetV2's 24-channel
bottlenecks on 16-lane AVX-512 targets, a layer left with 41 filters by the exact channel removal
of passes/remove_dead_channels.py, a 10-class head) would stay in NCHW on TVM's generic schedule,
and a model with 8·k-channel convs would otherwise take 8-channel blocks everywhere (ConvertLayout
cannot join 8- and 16-channel blocks in one graph), every layer at half the vector width. This
pass instead gives such convs extra output channels of zero filters, carries the padded tensor (its
extra channels hold values that no later result depends on) through per-channel operations, and
gives every conv that reads it zero weights for the extra input channels. Exact: the original
channels are computed from the same terms (plus products with exact zero weights). A 2-D matmul
with a constant weight (a classifier's 1000 columns) gets zero columns the same way: the dense
kernel then splits its columns into whole vectors and several parallel tasks (before: one task,
the last vector predicated, 1 G MAC/s on MobileNetV2's pruned classifier; now 9).

Per-channel operations carried through: element-wise ops with scalars or per-channel constants
(padded with 0 for add/subtract, 1 for multiply/divide; a padded tensor is never a divisor),
ReLU, Clip, min/max with scalars, sigmoid, tanh, pools, residual adds/multiplies of two tensors
padded alike, depthwise convs (extra channels get zero filters). A depthwise conv whose channels
are not a multiple of the block and whose input is not padded (a channel shuffle's output) gets
its input padded with zero channels (one copy) and is carried on from there. Every other reader (concat, reshape, matmul, a reduction over
channels, the function's outputs, …) gets the original channels back through a slice. The
padded channels stay finite: they start at exact zeros and pass only through these ops.
Binarized convs (fed by a Sign, ``where`` or rounding quantizer) are left alone: zero filters
would make their weights three-valued, and binary kernels have their own channel padding.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from ..passes.constants import constant_value

ELEMENTWISE_UNARY = {"relax.nn.relu", "relax.clip", "relax.sigmoid", "relax.tanh", "relax.nn.silu", "relax.negative"}
POOLS = {"relax.nn.max_pool2d", "relax.nn.avg_pool2d", "relax.nn.adaptive_avg_pool2d"}
BINARY = {"relax.add": 0.0, "relax.subtract": 0.0, "relax.multiply": 1.0, "relax.divide": 1.0, "relax.minimum": 0.0, "relax.maximum": 0.0}


def _name(call) -> str:
    return getattr(call.op, "name", "") if isinstance(call, relax.Call) else ""


def _round_up(value: int, block: int) -> int:
    return (value + block - 1) // block * block


def needs_padding(mod, block: int) -> bool:
    """Whether some NCHW conv2d (groups = 1) with a constant weight has output channels that are
    not a multiple of ``block``."""
    for func in mod.functions.values():
        if isinstance(func, relax.Function):
            for binding_block in func.body.blocks:
                for binding in binding_block.bindings:
                    value = binding.value
                    if _name(value) == "relax.nn.conv2d" and str(value.attrs.data_layout) == "NCHW" and (int(value.attrs.groups) == 1 or _depthwise(value)):
                        channels = int(value.args[1].ty.shape[0])
                        if channels % block and constant_value(value.args[1]) is not None:
                            return True
                    if _padded_matmul_weight(value, block, None) is not None or _token_matmul_weight(value, block) is not None:
                        return True
    return False


def _depthwise(call) -> bool:
    """Whether a conv2d is depthwise: one input channel per group, as many groups as channels."""
    groups, weight_shape = int(call.attrs.groups), [int(d) for d in call.args[1].ty.shape]
    shape = getattr(call.args[0].ty, "shape", None)
    return groups > 1 and shape is not None and len(shape) == 4 and int(shape[1]) == groups == weight_shape[0] and weight_shape[1] == 1


def _padded_matmul_weight(call, block: int, input_channels):
    """For a 2-D ``matmul`` with a constant ``[K, N]`` weight whose ``N`` is not a multiple of
    ``block`` (or whose input is padded to ``input_channels`` rows): the weight with zero columns
    up to a multiple of ``block`` and zero rows for the padded inputs; None otherwise."""
    if _name(call) != "relax.matmul":
        return None
    weight = constant_value(call.args[1])
    shape = getattr(call.args[0].ty, "shape", None)
    if weight is None or weight.ndim != 2 or shape is None or len(shape) != 2:
        return None
    if weight.shape[1] % block == 0 and input_channels is None:
        return None
    return _zero_padded(weight, _round_up(weight.shape[1], block), input_channels if input_channels is not None else weight.shape[0])


def _zero_padded(weight: np.ndarray, columns: int, rows: int) -> np.ndarray:
    """``weight`` ``[K, N]`` with zero columns up to ``columns`` and zero rows up to ``rows``."""
    wide = np.zeros((rows, columns), dtype=weight.dtype)
    wide[: weight.shape[0], : weight.shape[1]] = weight
    return wide


def _out_dtype(call):
    """A matmul's ``out_dtype`` attribute as ``relax.op.matmul`` takes it (None: the inputs')."""
    out_dtype = str(call.attrs.out_dtype)
    return None if out_dtype in ("", "void", "None") else out_dtype


def _token_matmul_weight(call, block: int):
    """For a ``matmul`` of a rank-3-or-more input (tokens or pixels × features) and a constant
    ``[K, N]`` weight whose ``N`` is not a multiple of ``block``: the weight with zero columns up
    to the block; None otherwise. (FocalNet's projection to 2·C + 3 features ran with a predicate
    on every vector's lanes: 6× onnxruntime's time for the model.) Weights whose rows are 4 KB
    apart need no zero columns: lowering/packed_matmuls.py stores GEMM-form weights in column
    panels."""
    if _name(call) != "relax.matmul":
        return None
    weight = constant_value(call.args[1])
    shape = getattr(call.args[0].ty, "shape", None)
    if weight is None or weight.ndim != 2 or shape is None or len(shape) < 3:
        return None
    if weight.shape[1] % block:
        return _zero_padded(weight, _round_up(weight.shape[1], block), weight.shape[0])
    return None


@relax.expr_functor.mutator
class _ChannelPadder(relax.PyExprMutator):
    def __init__(self, mod, block: int):
        super().__init__(mod)
        self.block = block
        self.padded: dict = {}  # new var -> original channel count (the var holds more)
        self.result_channels = None

    def visit_var_binding_(self, binding):
        self.result_channels = None
        value = self.visit_expr(binding.value)
        channels, self.result_channels = self.result_channels, None
        if isinstance(value, relax.Var) and value in self.padded:  # an alias of a padded value
            channels = self.padded[value]
        elif isinstance(value, relax.Tuple):  # a tuple of results: original channels
            value = relax.Tuple([self._slice(field, self.padded[field]) if field in self.padded else field for field in value.fields])
        if channels is not None and not isinstance(binding.var, relax.DataflowVar):
            value = self._slice(self.builder_.emit(value), channels)  # a block output: original channels
            channels = None
        new_var = (
            self.builder_.emit(value, binding.var.name) if isinstance(binding.var, relax.DataflowVar) else self.builder_.emit_output(value, binding.var.name)
        )
        self.set_var_remap(binding.var, new_var)
        if channels is not None:
            self.padded[new_var] = channels

    def visit_call_(self, call):
        # The arguments remapped without re-inferring the call's shape: with a padded argument it
        # is only valid once the rules below have adjusted the call.
        call = relax.Call(call.op, [self.visit_expr(arg) for arg in call.args], call.attrs, call.ty_args)
        name = _name(call)
        if name == "relax.nn.conv2d" and str(call.attrs.data_layout) == "NCHW" and str(call.attrs.kernel_layout) == "OIHW":
            return self._conv(call)
        if name == "relax.matmul":
            return self._matmul(call)
        if name in ELEMENTWISE_UNARY or (name in POOLS and str(call.attrs.layout) == "NCHW"):
            return self._carried(call)
        if name in BINARY:
            return self._binary(call)
        return self._sliced(call)

    # ------------------------------------------------------------------ rules

    def _fed_by_binarizer(self, expr) -> bool:
        """Whether ``expr`` is (a pad, pool, relayout or reshape of) a Sign, a ``where`` or a
        rounding quantizer: a binarized layer's input, which binary kernels read as it is (zero
        filters would make its weights three-valued)."""
        for _ in range(8):
            bound = self.lookup_binding(expr) if isinstance(expr, relax.Var) else expr
            name = _name(bound)
            if name in ("relax.sign", "relax.where"):
                return True
            if name in ("relax.divide", "relax.multiply"):
                first = self.lookup_binding(bound.args[0]) if isinstance(bound.args[0], relax.Var) else bound.args[0]
                return _name(first) == "relax.round"
            if name not in ("relax.nn.pad", "relax.nn.max_pool2d", "relax.layout_transform", "relax.reshape"):
                return False
            expr = bound.args[0]
        return False

    def _conv(self, call):
        weight = constant_value(call.args[1])
        data, groups = call.args[0], int(call.attrs.groups)
        if weight is None or self._fed_by_binarizer(data):
            return self._sliced(call)
        channels_in = self.padded.get(data)
        if groups > 1 and channels_in is None and _depthwise(call) and groups % self.block:
            # its input is not padded (a channel shuffle's output, say): zero channels here, so
            # that it and what follows keep whole blocks (ShuffleNet v1's 136-channel depthwise
            # convs had put the whole model in 8-channel blocks)
            wide = _round_up(groups, self.block)
            data = self.builder_.emit(relax.op.nn.pad(data, [0, 0, 0, wide - groups, 0, 0, 0, 0]), "padded_channels")
            self.padded[data] = channels_in = groups
        if groups > 1:
            if channels_in is None or groups != channels_in or weight.shape[0] != groups or weight.shape[1] != 1:
                return self._sliced(call)
            wide = int(data.ty.shape[1])  # depthwise: zero filters for the extra channels
            filters = np.zeros((wide, *weight.shape[1:]), dtype=weight.dtype)
            filters[:groups] = weight
            self.result_channels = channels_in
            return relax.op.nn.conv2d(data, relax.const(filters), **_conv_attrs(call, groups=wide))
        if channels_in is not None:  # zero weights for the extra input channels
            wide_in = np.zeros((weight.shape[0], int(data.ty.shape[1]), *weight.shape[2:]), dtype=weight.dtype)
            wide_in[:, : weight.shape[1]] = weight
            weight = wide_in
        out_channels = weight.shape[0]
        if out_channels % self.block:
            wide_out = np.zeros((_round_up(out_channels, self.block), *weight.shape[1:]), dtype=weight.dtype)
            wide_out[:out_channels] = weight
            weight = wide_out
            self.result_channels = out_channels
        if channels_in is None and weight.shape[0] == out_channels:
            return call
        return relax.op.nn.conv2d(data, relax.const(weight), **_conv_attrs(call))

    def _matmul(self, call):
        """A classifier ``x @ W`` with ``N`` outputs not a multiple of the block (1000 classes):
        zero columns up to the block, so the dense kernel splits the columns into whole vectors
        and parallel tasks; the result is carried padded like a conv's."""
        data = call.args[0]
        if self._fed_by_binarizer(data):
            return self._sliced(call)  # a binary dense layer: zero columns would make its weights three-valued
        channels_in = self.padded.get(data)
        token_weight = _token_matmul_weight(call, self.block) if channels_in is None else None
        if token_weight is not None:  # features on the last axis: the product on whole vectors, sliced back
            columns, rank = constant_value(call.args[1]).shape[1], len(data.ty.shape)
            wide = self.builder_.emit(relax.op.matmul(data, relax.const(token_weight), out_dtype=_out_dtype(call)))
            return relax.op.strided_slice(wide, axes=[rank - 1], begin=[0], end=[columns])
        wide_in = int(data.ty.shape[1]) if channels_in is not None else None
        weight = _padded_matmul_weight(call, self.block, wide_in)
        if weight is None:
            return self._sliced(call)
        original = constant_value(call.args[1]).shape[1]
        if weight.shape[1] != original:
            self.result_channels = original
        return relax.op.matmul(data, relax.const(weight), out_dtype=_out_dtype(call))

    def _carried(self, call):
        channels = self.padded.get(call.args[0])
        if channels is None:
            return call
        self.result_channels = channels
        return call  # re-emitted with the wider input: shapes follow

    def _binary(self, call):
        left, right = call.args
        padded = [self.padded.get(arg) for arg in (left, right)]
        if padded[0] is None and padded[1] is None:
            return call
        if _name(call) == "relax.divide" and padded[1] is not None:
            return self._sliced(call)  # the padded channels as a divisor would give Inf or NaN
        if padded[0] is not None and padded[1] is not None:
            if padded[0] != padded[1] or int(left.ty.shape[1]) != int(right.ty.shape[1]):
                return self._sliced(call)
            self.result_channels = padded[0]
            return call
        index = 0 if padded[0] is not None else 1
        tensor, other = call.args[index], call.args[1 - index]
        channels = padded[index]
        widened = _widened_constant(other, channels, int(tensor.ty.shape[1]), BINARY[_name(call)], len(tensor.ty.shape))
        if widened is None:
            return self._sliced(call)
        self.result_channels = channels
        args = [tensor, widened] if index == 0 else [widened, tensor]
        return relax.Call(call.op, args, call.attrs)

    def _sliced(self, call):
        """``call`` reading the original channels of every padded argument (also inside tuples)."""

        def original(arg):
            if isinstance(arg, relax.Tuple):
                return relax.Tuple([original(field) for field in arg.fields])
            return self._slice(arg, self.padded[arg]) if isinstance(arg, relax.Var) and arg in self.padded else arg

        return relax.Call(call.op, [original(arg) for arg in call.args], call.attrs, call.ty_args)

    def _slice(self, var, channels: int):
        return self.builder_.emit(relax.op.strided_slice(var, axes=[1], begin=[0], end=[channels]), "original_channels")


def _conv_attrs(call, **changes) -> dict:
    a = call.attrs
    attrs = dict(
        strides=a.strides,
        padding=a.padding,
        dilation=a.dilation,
        groups=int(a.groups),
        data_layout=str(a.data_layout),
        kernel_layout=str(a.kernel_layout),
        out_layout=str(a.out_layout),
        out_dtype=str(a.out_dtype) if str(a.out_dtype) not in ("", "void", "None") else None,
    )
    attrs.update(changes)
    return attrs


def _widened_constant(expr, channels: int, wide: int, fill: float, rank: int):
    """A constant operand of a per-channel op on a padded tensor (per channel, or per channel and
    position as the folded BN and the absorbed constant channels leave them at zero-padded
    borders), widened with ``fill``; scalars as they are; None for anything else."""
    value = constant_value(expr)
    if value is None:
        return None
    if value.size == 1:  # as a scalar: ConvertLayout cannot give a [1, 1, 1, 1] operand a channel block
        return expr if value.ndim == 0 else relax.const(value.reshape(()))
    axis = value.ndim - (rank - 1)  # the channel axis of a broadcast operand
    if axis < 0 or value.shape[axis] != channels or any(d != 1 for d in value.shape[:axis]):
        return None
    shape = list(value.shape)
    shape[axis] = wide
    widened = np.full(shape, fill, dtype=value.dtype)
    index = [slice(None)] * value.ndim
    index[axis] = slice(0, channels)
    widened[tuple(index)] = value
    return relax.const(widened)


def pad_channels_to_block(block: int) -> tvm.transform.Pass:
    """Module pass: the module docstring's padding when :func:`needs_padding`."""

    @tvm.transform.module_pass(opt_level=0, name="slimtvm.PadChannelsToBlock")
    def _pad(mod, _ctx):
        if not needs_padding(mod, block):
            return mod
        padder = _ChannelPadder(mod, block)
        for gvar, func in list(mod.functions.items()):
            if isinstance(func, relax.Function):
                padder.builder_.update_func(gvar, padder.visit_expr(func))
        return padder.builder_.get()

    return _pad
