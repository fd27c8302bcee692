"""Recognise binarized layers exactly: ``conv2d(sign(x), W)`` / ``matmul(sign(x), W)`` with two-valued weights.

Runs after constant folding, so weights that the ONNX export binarizes in the graph (Abs →
ReduceMean → Sign → Mul on float weights) are constants by now. A layer qualifies when its input
is ``relax.sign(x)`` and, for every output channel ``c``, every weight is ``+α_c`` or ``−α_c``
with ``α_c > 0`` (compared exactly: ``α · sign(w)`` is exact in floating point). Batch norm folded
into such a conv scales each channel by ``s_c``, which keeps it two-valued (a negative ``s_c``
flips the signs, which the packed bits record).

Such a layer becomes slimtvm's bitserial kernel (schedules/bitserial.py): activations and
weights packed to bits, XNOR + popcount, then one multiply by ``α_c``. Detection (and its report)
is a graph pass; the replacement happens after layout conversion (``LowerBinaryLayers``). It computes
what the ONNX model computes except where an activation is exactly 0: ONNX's Sign(0) is 0, here
it is +1. Layers fed by Sign whose weights are not two-valued stay float, and the report says why.
Refuses nothing; a model without binarized layers is returned unchanged.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from ..schedules.binary_conv_packed import binary_conv2d_packed, binary_conv2d_to_bits, count_dtype, packed_input_extent, padded_channel_bytes, padded_out_channels
from ..schedules.stages import conv_output_hw
from .binary_blocks import PackedConv, threshold_plan, use_counts
from ..schedules.bitserial import WORD_BITS, binary_conv2d_nchw, binary_dense, words_for
from .constants import constant_value


@dataclass
class BinarizeReport:
    binary_convs: int = 0
    binary_dense: int = 0
    stayed_float: Counter = field(default_factory=Counter)  # reason -> count
    multibit_convs: int = 0  # lowering only: convs with k-bit unipolar activations
    binary_weight_layers: int = 0  # float input, ±α weights (BWN): recognised, fp32 kernel
    fused_thresholds: int = 0  # lowering only: BN → Sign pairs that became integer thresholds
    layers: list = field(default_factory=list)  # per Sign-fed conv/matmul, in graph order: "binary" or the reason it stays float
    or_pools: int = 0  # lowering only: max-pools that run on packed bits

    def to_json(self) -> dict:
        return {"binary_convs": self.binary_convs, "binary_dense": self.binary_dense, "stayed_float_because": dict(self.stayed_float), "layers": list(self.layers), "binary_weight_layers": self.binary_weight_layers}

    def stays_float(self, reason: str) -> None:
        self.stayed_float[reason] += 1
        self.layers.append(reason)


def two_valued_scale(weight: np.ndarray, channel_axis: int):
    """α per output channel if every weight of that channel is ±α with α > 0, else (None, reason)."""
    moved = np.moveaxis(weight, channel_axis, 0).reshape(weight.shape[channel_axis], -1)
    alpha = np.abs(moved[:, 0])
    if not np.all(alpha > 0):
        return None, "an output channel has a zero weight"
    if not np.all(np.abs(moved) == alpha[:, None]):
        return None, "weights take more than two values (±α) per output channel"
    return alpha.astype(np.float32), None


def pack_weight_signs(weight_rows: np.ndarray) -> np.ndarray:
    """Rows of weights [rows, channels] → uint32 words [rows, words]: bit b of word w is
    ``weight[:, 32w + b] > 0``; bits past the last channel are 0."""
    rows, channels = weight_rows.shape
    bits = np.zeros((rows, words_for(channels) * WORD_BITS), dtype=np.uint64)
    bits[:, :channels] = weight_rows > 0
    shifts = np.arange(WORD_BITS, dtype=np.uint64)
    return (bits.reshape(rows, -1, WORD_BITS) << shifts).sum(axis=2).astype(np.uint32)


def pack_conv_weight_bytes(weight: np.ndarray):
    """OIHW ±α weights → (uint8 ``[KH, KW, CB, O']`` sign bytes, ``[KH, KW, O']`` tap sums).

    Bit b of byte k is ``weight[o, 8k + b] > 0``; channel and output-channel padding is 0 bits.
    A tap sum is C − 2·(ones among the tap's bits): what the tap adds when its activations are
    all 0 bits, which is what the kernel subtracts for taps over the zero padding.
    """
    out_channels, channels, kh, kw = weight.shape
    bits = np.zeros((kh, kw, padded_channel_bytes(channels) * 8, padded_out_channels(out_channels)), dtype=np.uint8)
    bits[:, :, :channels, :out_channels] = np.transpose(weight > 0, (2, 3, 1, 0))
    weight_bytes = np.packbits(bits, axis=2, bitorder="little")
    tap_sums = np.zeros((kh, kw, bits.shape[3]), dtype=np.int32)
    tap_sums[:, :, :out_channels] = channels - 2 * np.transpose((weight > 0).sum(axis=1), (1, 2, 0))
    return np.ascontiguousarray(weight_bytes), tap_sums.astype(count_dtype(kh * kw * channels))


def split_weight_nibbles(weight_bytes: np.ndarray) -> np.ndarray:
    """uint8 ``[KH, KW, CB, O']`` → ``[KH, KW, CB, 2, O']``: each byte's low nibble, then its
    high nibble, the weights of the AVX2 table popcount (schedules/binary_conv_packed.py)."""
    return np.ascontiguousarray(np.stack([weight_bytes & 15, weight_bytes >> 4], axis=3))


def _scalar(value):
    """The single value of a constant whose elements are all equal, else None."""
    if value is None or value.size == 0:
        return None
    flat = np.asarray(value, dtype=np.float64).reshape(-1)
    return float(flat[0]) if np.all(flat == flat[0]) else None


def _plain_layout_transforms(func) -> dict:
    """var -> var of a binding ``layout_transform(var)`` from NCHW[b]c (5-D) to NCHW (4-D)."""
    found = {}
    for block in func.body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Call) and getattr(value.op, "name", "") == "relax.layout_transform":
                source = value.args[0]
                if isinstance(source, relax.Var) and len(source.ty.shape) == 5 and len(binding.var.ty.shape) == 4:
                    found[source] = binding.var
    return found


def weight_as_oihw(weight: np.ndarray, kernel_layout: str):
    """A conv weight in ``OIHW``, ``OIHW{b}o`` or ``OIHW{b}i{b}o`` (ConvertLayout's) back in OIHW;
    None for another layout."""
    if kernel_layout == "OIHW":
        return weight
    if re.fullmatch(r"OIHW\d+o", kernel_layout):  # [O/b, I, KH, KW, b]
        chunks, channels, kh, kw, block = weight.shape
        return np.transpose(weight, (0, 4, 1, 2, 3)).reshape(chunks * block, channels, kh, kw)
    if re.fullmatch(r"OIHW\d+i\d+o", kernel_layout):  # [O/b, I/b, KH, KW, bi, bo]
        out_chunks, in_chunks, kh, kw, in_block, out_block = weight.shape
        return np.transpose(weight, (0, 5, 1, 4, 2, 3)).reshape(out_chunks * out_block, in_chunks * in_block, kh, kw)
    return None


def channel_block(layout: str) -> int:
    """``b`` of an ``NCHW{b}c`` layout, 0 for ``NCHW``; raises ValueError for anything else."""
    if layout == "NCHW":
        return 0
    match = re.fullmatch(r"NCHW(\d+)c", layout)
    if match is None:
        raise ValueError(layout)
    return int(match.group(1))


@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    """Finds binarized layers (the report); with ``lower=True`` also replaces them by kernels."""

    def __init__(self, mod, report: BinarizeReport, lower: bool, popcount_tables: bool = False):
        super().__init__(mod)
        self.report = report
        self.lower = lower
        self.popcount_tables = popcount_tables
        self.uses: dict = {}  # var -> readers, of the function being rewritten
        self.packed_convs: dict = {}  # PrimFunc name -> PackedConv, for threshold fusion

    def visit_function(self, func):
        self.uses = use_counts(func)
        self.to_plain = _plain_layout_transforms(func)  # conv var -> its only reader, a relayout to NCHW
        self.plain_outputs = {}  # that reader's var -> the kernel's NCHW result
        self.binding_var = None
        return self.visit_expr(func)

    def visit_var_binding_(self, binding):
        if binding.var in self.plain_outputs:  # the kernel already wrote NCHW: no relayout
            self.set_var_remap(binding.var, self.plain_outputs[binding.var])
            return
        self.binding_var, self.wrote_plain = binding.var, False
        super().visit_var_binding_(binding)
        if self.wrote_plain:
            self.plain_outputs[self.to_plain[binding.var]] = self.get_var_remap(binding.var)
        self.binding_var = None

    def _bound(self, expr, through_layouts=True):
        """What ``expr`` is bound to, looking through ``layout_transform`` (ConvertLayout's
        NCHW ↔ NCHW[b]c relayouts of the same values) when asked."""
        while True:
            if isinstance(expr, relax.Var):
                bound = self.lookup_binding(expr)
                expr = bound if bound is not None else expr
            if through_layouts and isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.layout_transform":
                expr = expr.args[0]
                continue
            return expr

    def _binarized(self, expr):
        """``x`` when ``expr`` is (bound to) a binarization of ``x``: ``sign(x)`` (ONNX Sign:
        0 → 0, the documented difference), ``where(x ≥ 0, 1, −1)``, ``where(x < 0, −1, 1)`` or
        ``sign(sign(x) + c)`` with 0 < c < 1 (Larq's ste_sign) — the last three are exactly
        slimtvm's 0 → +1. Layout transforms in between are looked through: the kernel reads
        ``x`` in whatever layout ``x`` has. Else None."""
        expr = self._bound(expr)
        if not isinstance(expr, relax.Call):
            return None
        name = getattr(expr.op, "name", "")
        if name == "relax.nn.max_pool2d":
            return self._pooled_binarized(expr)
        if name == "relax.sign":
            inner = self._bound(expr.args[0])
            if isinstance(inner, relax.Call) and getattr(inner.op, "name", "") == "relax.add":
                for index in (0, 1):
                    offset = _scalar(constant_value(inner.args[1 - index]))
                    nested = self._bound(inner.args[index])
                    if offset is not None and 0 < offset < 1 and isinstance(nested, relax.Call) and getattr(nested.op, "name", "") == "relax.sign":
                        return nested.args[0]
            return expr.args[0]
        if name == "relax.where":
            values = (_scalar(constant_value(expr.args[1])), _scalar(constant_value(expr.args[2])))
            condition = self._bound(expr.args[0])
            if not isinstance(condition, relax.Call) or _scalar(constant_value(condition.args[1])) != 0.0:
                return None
            test = getattr(condition.op, "name", "")
            if (test, values) in (("relax.greater_equal", (1.0, -1.0)), ("relax.less", (-1.0, 1.0))):
                return condition.args[0]
        return None

    def _call(self, expr, name):
        """The call ``expr`` is bound to if it calls ``name`` (layouts looked through), else None."""
        bound = self._bound(expr)
        return bound if isinstance(bound, relax.Call) and getattr(bound.op, "name", "") == name else None

    def _clipped_to_unit(self, expr):
        """``x`` when ``expr`` is clip(x, 0, 1) (as clip, or max-then-min / min-then-max)."""
        outer = self._bound(expr)
        if not isinstance(outer, relax.Call):
            return None
        name = getattr(outer.op, "name", "")
        if name == "relax.clip":
            return outer.args[0] if (_scalar(constant_value(outer.args[1])), _scalar(constant_value(outer.args[2]))) == (0.0, 1.0) else None
        pairs = {"relax.minimum": ("relax.maximum", 1.0, 0.0), "relax.maximum": ("relax.minimum", 0.0, 1.0)}
        if name not in pairs or _scalar(constant_value(outer.args[1])) != pairs[name][1]:
            return None
        inner = self._call(outer.args[0], pairs[name][0])
        return inner.args[0] if inner is not None and _scalar(constant_value(inner.args[1])) == pairs[name][2] else None

    def _unipolar(self, expr):
        """(``x``, L) when ``expr`` is round(clip(x, 0, 1)·L)/L with L = 2^k − 1, k ∈ 1..4 (a
        DoReFa-style k-bit activation quantizer, as ONNX Clip → Mul → Round → Div), else None."""
        outer = self._bound(expr)
        if not isinstance(outer, relax.Call) or getattr(outer.op, "name", "") not in ("relax.divide", "relax.multiply"):
            return None
        factor = _scalar(constant_value(outer.args[1]))
        rounded = self._call(outer.args[0], "relax.round")
        scaled = self._call(rounded.args[0], "relax.multiply") if rounded is not None else None
        if factor is None or scaled is None:
            return None
        levels = _scalar(constant_value(scaled.args[1]))
        if levels not in (3.0, 7.0, 15.0):
            return None
        expected = levels if getattr(outer.op, "name", "") == "relax.divide" else float(np.float32(1.0 / levels))
        source = self._clipped_to_unit(scaled.args[0])
        return (source, int(levels)) if factor == expected and source is not None else None

    def _pooled_binarized(self, pool):
        """Max-pool after the binarization (Conv → BN → Sign → MaxPool → Conv): max-pool commutes
        with a monotone binarizer, so the input is ``binarize(max_pool(x))``; returns a new
        ``max_pool(x)`` (same attributes), or None when ``x`` is in another layout than the pool."""
        source = self._binarized(pool.args[0])
        inner = self._bound(pool.args[0], through_layouts=False)
        if source is None or not isinstance(inner, relax.Call) or len(source.ty.shape) != len(pool.args[0].ty.shape):
            return None
        a = pool.attrs
        return self.builder_.emit(
            relax.op.nn.max_pool2d(source, a.pool_size, a.strides, a.padding, a.dilation, a.ceil_mode, a.count_include_pad, a.layout, a.out_layout),
            "pooled_before_sign",
        )

    def _sign_input(self, expr):
        """(``x``, the channel block of ``x``'s layout (0 for NCHW), activation levels: 1 for
        sign bits, L = 2^k − 1 for a k-bit unipolar quantizer) for a binarized input, else None."""
        source, levels = self._binarized(expr), 1
        if source is None:
            found = self._unipolar(expr)
            if found is None:
                return None
            source, levels = found
        shape = source.ty.shape
        if len(shape) == 5:
            return source, int(shape[4]), levels
        return (source, 0, levels) if len(shape) in (2, 4) else None

    def visit_call_(self, call):
        call = super().visit_call_(call)
        name = getattr(call.op, "name", "")
        if name not in ("relax.nn.conv2d", "relax.matmul"):
            return call
        found = self._sign_input(call.args[0])
        if found is None:
            if not self.lower:
                self._note_binary_weights(call, name)
            return call
        source, source_block, levels = found
        weight = constant_value(call.args[1])
        if weight is None:
            self.report.stays_float("weights are not constants")
            return call
        if levels > 1 and (name != "relax.nn.conv2d" or int(call.attrs.groups) != 1):
            if two_valued_scale(weight, 0 if name == "relax.nn.conv2d" else weight.ndim - 1)[0] is not None:
                self.report.stays_float("k-bit activations are supported in convs with groups = 1 only")
            return call
        return self._conv(call, source, weight, source_block, levels) if name == "relax.nn.conv2d" else self._dense(call, source, weight)

    def _note_binary_weights(self, call, name):
        """Count a float-input layer whose weights are ±α per channel (BWN). It keeps the fp32
        kernel: with a float input the product needs the float values anyway, and on these CPUs
        an add/subtract kernel is no faster than a fused multiply-add one."""
        weight = constant_value(call.args[1])
        if weight is None or weight.ndim < 2:
            return
        if name == "relax.nn.conv2d" and str(call.attrs.kernel_layout) != "OIHW":
            return
        alpha, _ = two_valued_scale(weight, 0 if name == "relax.nn.conv2d" else weight.ndim - 1)
        if alpha is not None:
            self.report.binary_weight_layers += 1

    def _conv(self, call, source, weight, source_block=None, levels=1):
        attrs = call.attrs
        weight = weight_as_oihw(weight, str(attrs.kernel_layout)) if weight.ndim in (4, 5, 6) else None
        try:
            layouts = (channel_block(str(attrs.data_layout)), channel_block(str(attrs.out_layout)))
        except ValueError:
            layouts = None
        if layouts is not None and source_block is not None:
            layouts = (source_block, layouts[1])
        if weight is None or layouts is None:
            self.report.stays_float(f"conv layout {attrs.data_layout}/{attrs.kernel_layout} is not supported")
            return call
        alpha, reason = two_valued_scale(weight, 0)
        if alpha is None:
            self.report.stays_float(reason)
            return call
        out_channels, per_group, kh, kw = weight.shape
        self.report.binary_convs += 1
        self.report.layers.append("binary")
        if not self.lower:
            return call
        if int(attrs.groups) == 1:
            return self._packed_conv(call, source, weight, alpha, *layouts, levels)
        rows = np.transpose(weight, (0, 2, 3, 1)).reshape(-1, per_group)  # [O·KH·KW, C/g]
        packed = pack_weight_signs(rows).reshape(out_channels, kh, kw, -1).transpose(0, 3, 1, 2).copy()
        return self.builder_.call_te(
            binary_conv2d_nchw,
            source,
            relax.const(packed, "uint32"),
            relax.const(alpha, "float32"),
            per_group,
            [int(v) for v in attrs.strides],
            [int(v) for v in attrs.padding],
            [int(v) for v in attrs.dilation],
            int(attrs.groups),
            *layouts,
            primfunc_name_hint="binary_conv2d",
        )

    def _packed_conv(self, call, source, weight, alpha, in_block, out_block, levels=1):
        attrs = call.attrs
        weight_bytes, tap_sums = pack_conv_weight_bytes(weight)
        shape = [int(d) for d in source.ty.shape]
        conv = PackedConv(
            source, weight_bytes, tap_sums, alpha, int(weight.shape[1]), (shape[2], shape[3]),
            [int(v) for v in attrs.strides], [int(v) for v in attrs.padding], [int(v) for v in attrs.dilation], in_block, out_block, levels,
        )
        if levels > 1:
            conv.alpha = (alpha / np.float32(levels)).astype(np.float32)
            self.report.multibit_convs += 1
        plan = None if levels > 1 else threshold_plan(self.lookup_binding, self.uses, call.args[0], source, self.packed_convs)
        if plan is not None:
            conv.source = self.builder_.emit(self._bits_from(plan, conv), "sign_bits")
            self.report.fused_thresholds += 1
            self.report.or_pools += int(bool(plan.pool))
        reader = self.to_plain.get(self.binding_var)
        if self.lower and out_block and reader is not None and self.uses.get(self.binding_var, 0) == 1:
            conv.out_block, self.wrote_plain = 0, True  # write NCHW for the relayout that reads it
        lowered = self._emit_packed(conv)
        self.packed_convs[lowered.args[0].name_hint] = conv
        return lowered

    def _emit_packed(self, conv: PackedConv):
        return self.builder_.call_te(
            binary_conv2d_packed,
            conv.source,
            relax.const(self._kernel_weights(conv.weight_bytes), "uint8"),
            relax.const(conv.alpha, "float32"),
            relax.const(conv.tap_sums, str(conv.tap_sums.dtype)),
            conv.channels,
            list(conv.image_hw),
            conv.strides,
            conv.padding,
            conv.dilation,
            conv.in_block,
            conv.out_block,
            conv.levels,
            primfunc_name_hint="binary_conv2d",
        )

    def _kernel_weights(self, weight_bytes: np.ndarray) -> np.ndarray:
        """The packed conv's weights as its kernel reads them: bytes, or nibbles for AVX2 tables."""
        return split_weight_nibbles(weight_bytes) if self.popcount_tables else weight_bytes

    def _bits_from(self, plan, consumer: PackedConv):
        """The producer of ``plan`` again, writing ``consumer``'s packed, zero-padded input."""
        producer = plan.producer
        kh, kw, channel_bytes, _ = consumer.weight_bytes.shape
        out_h, out_w = conv_output_hw(*consumer.image_hw, kh, kw, consumer.strides, consumer.padding, consumer.dilation)
        rows, cols = packed_input_extent(out_h, out_w, kh, kw, consumer.strides, consumer.dilation)
        next_conv = [int(channel_bytes), rows, cols, consumer.padding[0], consumer.padding[1]]
        return self.builder_.call_te(
            binary_conv2d_to_bits,
            producer.source,
            relax.const(self._kernel_weights(producer.weight_bytes), "uint8"),
            relax.const(producer.tap_sums, str(producer.tap_sums.dtype)),
            relax.const(plan.flip, "int32"),
            relax.const(plan.threshold, "int32"),
            producer.channels,
            producer.out_channels,
            list(producer.image_hw),
            producer.strides,
            producer.padding,
            producer.dilation,
            producer.in_block,
            list(plan.pool),
            next_conv,
            producer.levels,
            primfunc_name_hint="binary_conv2d_bits",
        )

    def _dense(self, call, source, weight):
        if weight.ndim != 2 or len(call.args[0].ty.shape) != 2:
            self.report.stays_float("matmul is not 2-D")
            return call
        alpha, reason = two_valued_scale(weight, 1)  # weight [K, N]: output channels on axis 1
        if alpha is None:
            self.report.stays_float(reason)
            return call
        self.report.binary_dense += 1
        self.report.layers.append("binary")
        if not self.lower:
            return call
        return self.builder_.call_te(
            binary_dense,
            source,
            relax.const(pack_weight_signs(weight.T), "uint32"),
            relax.const(alpha, "float32"),
            int(weight.shape[0]),
            primfunc_name_hint="binary_dense",
        )


def _run(mod, report: BinarizeReport, lower: bool, popcount_tables: bool = False):
    rewriter = _Rewriter(mod, report, lower, popcount_tables)
    for gvar, func in list(mod.functions.items()):
        if isinstance(func, relax.Function):
            rewriter.builder_.update_func(gvar, rewriter.visit_function(func))
    mod = rewriter.builder_.get()
    if lower and (report.binary_convs or report.binary_dense):
        mod = relax.transform.DeadCodeElimination()(mod)
    return mod


@tvm.transform.module_pass(opt_level=0, name="slimtvm.DetectBinaryLayers")
class DetectBinaryLayers:
    """Graph pass: finds the binarized conv2d/matmul layers and reports them (and why the others
    fed by Sign stay float). Leaves the module unchanged: :class:`LowerBinaryLayers` replaces
    them by kernels once convolutions have their final layouts."""

    def __init__(self):
        self.report = BinarizeReport()

    def transform_module(self, mod, _ctx):
        self.report = BinarizeReport()
        _run(mod, self.report, lower=False)
        return mod


@tvm.transform.module_pass(opt_level=0, name="slimtvm.LowerBinaryLayers")
class LowerBinaryLayers:
    """Kernel pass (after ConvertLayout and constant folding): binarized layers become bitserial
    kernels that read and write the layouts ConvertLayout chose (NCHW or NCHW[b]c), so the float
    ops around them (batch norm, residual adds) stay in the blocked layout and fuse into their
    epilogue. Weights in OIHW[b]o / OIHW[b]i[b]o are read back as OIHW."""

    def __init__(self):
        self.report = BinarizeReport()
        self.popcount_tables = False

    def use_popcount_tables(self, enabled: bool) -> None:
        """Give the packed binary convs weight nibbles for the AVX2 table popcount
        (:func:`slimtvm.targets.presets.popcount_by_table` says when the target wants it)."""
        self.popcount_tables = enabled

    def transform_module(self, mod, _ctx):
        self.report = BinarizeReport()
        return _run(mod, self.report, lower=True, popcount_tables=self.popcount_tables)

    def blocks_report(self) -> dict:
        """The manifest entry for the fusion between binary layers (passes/binary_blocks.py)."""
        return {
            "binary_convs_lowered": self.report.binary_convs,
            "binary_dense_lowered": self.report.binary_dense,
            "k_bit_activation_convs": self.report.multibit_convs,
            "thresholds_fused": self.report.fused_thresholds,
            "max_pools_on_bits": self.report.or_pools,
        }
