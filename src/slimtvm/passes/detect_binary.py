"""Recognise binarized layers exactly: ``conv2d(sign(x), W)`` / ``matmul(sign(x), W)`` with two-valued weights.

Runs after constant folding, so weights that the ONNX export binarizes in the graph (Abs →
ReduceMean → Sign → Mul on float weights) are constants by now. A layer qualifies when its input
is a binarization of ``x`` (see :meth:`BinaryLayerMatcher.binarized`) and, for every output
channel ``c``, every weight is ``+α_c`` or ``−α_c`` with ``α_c > 0`` (compared exactly:
``α · sign(w)`` is exact in floating point). Batch norm folded into such a conv scales each channel
by ``s_c``, which keeps it two-valued (a negative ``s_c`` flips the signs, which the packed bits
record).

This pass only detects and reports (and why the other Sign-fed layers stay float); the module is
returned unchanged. :mod:`slimtvm.lowering.binary_layers` reuses :class:`BinaryLayerMatcher` to
replace the same layers by kernels once convolutions have their final layouts. The kernels
compute what the ONNX model computes except where an activation is exactly 0: ONNX's Sign(0) is
0, slimtvm's is +1. Refuses nothing; a model without binarized layers is returned unchanged.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

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
        return {
            "binary_convs": self.binary_convs,
            "binary_dense": self.binary_dense,
            "stayed_float_because": dict(self.stayed_float),
            "layers": list(self.layers),
            "binary_weight_layers": self.binary_weight_layers,
        }

    def stays_float(self, reason: str) -> None:
        self.stayed_float[reason] += 1
        self.layers.append(reason)


EARLY_CHECK_COLUMNS = 16


def two_valued_scale(weight: np.ndarray, channel_axis: int):
    """α per output channel if every weight of that channel is ±α with α > 0, else (None, reason)."""
    moved = np.moveaxis(weight, channel_axis, 0).reshape(weight.shape[channel_axis], -1)
    alpha = np.abs(moved[:, 0])
    if not np.all(alpha > 0):
        return None, "an output channel has a zero weight"
    # a float layer's weights differ within the first few of each channel: VGG-19's 548 MB took
    # 1.9 s of its compile checked whole
    for columns in (moved[:, :EARLY_CHECK_COLUMNS], moved):
        if not np.all(np.abs(columns) == alpha[:, None]):
            return None, "weights take more than two values (±α) per output channel"
    return alpha.astype(np.float32), None


def scalar_value(value):
    """The single value of a constant whose elements are all equal, else None."""
    if value is None or value.size == 0:
        return None
    flat = np.asarray(value, dtype=np.float64).reshape(-1)
    return float(flat[0]) if np.all(flat == flat[0]) else None


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


def static_float_conv_weight(call):
    """The OIHW float32 constant weight of a conv2d ``call`` whose input has a static shape, else
    None (a weight computed at run time, another dtype or layout, a dynamic input)."""
    dims = getattr(call.args[0].ty, "shape", None)
    if dims is None or not all(isinstance(v, tvm.tirx.IntImm) for v in dims):
        return None
    weight = constant_value(call.args[1])
    if weight is None or weight.dtype != np.float32:
        return None
    return weight_as_oihw(weight, str(call.attrs.kernel_layout))


def channel_block(layout: str) -> int:
    """``b`` of an ``NCHW{b}c`` layout, 0 for ``NCHW``; raises ValueError for anything else."""
    if layout == "NCHW":
        return 0
    match = re.fullmatch(r"NCHW(\d+)c", layout)
    if match is None:
        raise ValueError(layout)
    return int(match.group(1))


def op_name(expr) -> str:
    """The operator name of a Relax call (``relax.nn.conv2d``, …), "" for anything else."""
    return getattr(expr.op, "name", "") if isinstance(expr, relax.Call) else ""


@dataclass(frozen=True)
class InputPadding:
    """The padding a binary conv reads around its image: ``(top, left, bottom, right)`` pixels of
    ``value`` — 0 (ONNX's zero padding: a third value, which the kernel corrects for), +1 (Larq's
    one-padding, ``pad_values=1``) or −1."""

    pads: tuple
    value: float = 0.0

    @staticmethod
    def of(call, explicit, levels: int):
        """(the padding of conv ``call`` with an ``explicit`` pad (or None) in front, None) or
        (None, the reason the two cannot be one kernel's padding)."""
        own = tuple(int(v) for v in call.attrs.padding)
        if explicit is None:
            return InputPadding(own), None
        if explicit.value != 0 and any(own):
            return None, f"a Pad of value {explicit.value:g} followed by the conv's own zero padding"
        if explicit.value != 0 and levels > 1:
            return None, f"a Pad of value {explicit.value:g} before k-bit unipolar activations"
        if explicit.value != 0 and int(call.attrs.groups) != 1:
            return None, f"a Pad of value {explicit.value:g} before a grouped binary conv"
        return InputPadding(tuple(a + b for a, b in zip(own, explicit.pads)), explicit.value), None

    def describe(self) -> str:
        if not any(self.pads):
            return "no padding"
        kind = {0.0: "zero padding", 1.0: "one-padding (+1)", -1.0: "padding with −1"}[self.value]
        return f"{kind} {list(self.pads)}"


class BinaryLayerMatcher(relax.PyExprMutator):
    """Walks a Relax function and finds the binarized conv2d/matmul layers, in graph order.

    For every conv2d and matmul it calls one hook: :meth:`binary_conv` / :meth:`binary_dense`
    for a recognised binary layer, :meth:`float_layer` for every other one (with the reason when
    it is fed by a binarizer). The hooks return the expression that replaces the call; here they
    record the decision in ``report`` and keep the call. Subclasses (the lowering) emit kernels.
    Decorate a concrete subclass with ``@relax.expr_functor.mutator``.
    """

    def __init__(self, mod, report: BinarizeReport):
        super().__init__(mod)
        self.report = report

    def visit_function(self, func):
        """Rewrite one Relax function (subclasses set up per-function state first)."""
        return self.visit_expr(func)

    # ------------------------------------------------------------------ hooks

    def binary_conv(self, call, source, weight, alpha, layouts, levels, padding):
        """A recognised binary conv: ``weight`` OIHW ±α, ``layouts`` = (input block, output
        block) of NCHW[b]c (0: NCHW), ``levels`` 1 (signs) or 2^k − 1 (k-bit unipolar input),
        ``padding`` the :class:`InputPadding` of the binarized input (the conv's own zero padding
        and any explicit Pad in front of it)."""
        return call

    def binary_dense(self, call, source, weight, alpha):
        """A recognised binary matmul: ``weight`` [K, N], ±α per output column."""
        return call

    def float_layer(self, call, reason: str | None):
        """A conv2d/matmul that stays float; ``reason`` is None when no binarizer feeds it."""
        if reason is None:
            self._note_binary_weights(call)
        return call

    # ------------------------------------------------------------------ recognition

    def bound(self, expr, through_layouts=True):
        """What ``expr`` is bound to, looking through ``layout_transform`` (ConvertLayout's
        NCHW ↔ NCHW[b]c relayouts of the same values) when asked."""
        while True:
            if isinstance(expr, relax.Var):
                bound = self.lookup_binding(expr)
                expr = bound if bound is not None else expr
            if through_layouts and op_name(expr) == "relax.layout_transform":
                expr = expr.args[0]
                continue
            return expr

    def binarized(self, expr):
        """``x`` when ``expr`` is (bound to) a binarization of ``x``: ``sign(x)`` (ONNX Sign:
        0 → 0, the documented difference), ``where(x ≥ 0, 1, −1)``, ``where(x < 0, −1, 1)`` or
        ``sign(sign(x) + c)`` with 0 < c < 1 (Larq's ste_sign) — the last three are exactly
        slimtvm's 0 → +1. Layout transforms in between are looked through: the kernel reads
        ``x`` in whatever layout ``x`` has. Else None."""
        expr = self.bound(expr)
        name = op_name(expr)
        if name == "relax.nn.max_pool2d":
            return self._pooled_binarized(expr)
        if name == "relax.sign":
            inner = self.bound(expr.args[0])
            if op_name(inner) == "relax.add":
                for index in (0, 1):
                    offset = scalar_value(constant_value(inner.args[1 - index]))
                    nested = self.bound(inner.args[index])
                    if offset is not None and 0 < offset < 1 and op_name(nested) == "relax.sign":
                        self.form = "sign(sign(x) + c), 0 → +1 (Larq's ste_sign; where(x ≥ 0, 1, −1))"
                        return nested.args[0]
            zero = self.exact_zero_source(expr.args[0])
            if zero is not None:
                self.refusal = f"ONNX Sign(0) is 0, which no binary kernel computes, and its input can be exactly 0 (it comes from {zero})"
                return None
            shifted = op_name(inner) == "relax.add" and any(constant_value(operand) is not None for operand in inner.args)
            self.form = "Sign(x + b), a constant shift (ReActNet's RSign when per channel)" if shifted else "Sign(x)"
            return expr.args[0]
        if name == "relax.where":
            values = (scalar_value(constant_value(expr.args[1])), scalar_value(constant_value(expr.args[2])))
            condition = self.bound(expr.args[0])
            if not isinstance(condition, relax.Call) or len(condition.args) != 2 or scalar_value(constant_value(condition.args[1])) != 0.0:
                return None
            if (op_name(condition), values) in (("relax.greater_equal", (1.0, -1.0)), ("relax.less", (-1.0, 1.0))):
                self.form = "where(x ≥ 0, 1, −1), 0 → +1"
                return condition.args[0]
        return None

    ZERO_PRODUCERS = {"relax.nn.relu": "a Relu", "relax.round": "a Round", "relax.floor": "a Floor", "relax.ceil": "a Ceil"}
    ZERO_PRESERVING = ("relax.nn.max_pool2d", "relax.nn.avg_pool2d", "relax.nn.adaptive_avg_pool2d", "relax.layout_transform", "relax.reshape")

    def exact_zero_source(self, expr):
        """What makes ``expr`` exactly 0 often enough to matter — a Relu, a Clip or max at 0, a
        rounding, an integer cast, or a pool, reshape or upper clip of those — as words; None
        otherwise (a float that is 0 only by coincidence is ONNX Sign's documented difference)."""
        value = self.bound(expr, through_layouts=False)
        name = op_name(value)
        while name in self.ZERO_PRESERVING or (name == "relax.minimum" and self._non_negative_constant_operand(value) is not None):
            operand = 0 if name in self.ZERO_PRESERVING else 1 - self._non_negative_constant_operand(value)
            value = self.bound(value.args[operand], through_layouts=False)
            name = op_name(value)
        if name in self.ZERO_PRODUCERS:
            return self.ZERO_PRODUCERS[name]
        if name == "relax.clip" and scalar_value(constant_value(value.args[1])) == 0.0:
            return "a Clip at 0"
        if name == "relax.maximum" and 0.0 in (scalar_value(constant_value(value.args[0])), scalar_value(constant_value(value.args[1]))):
            return "a Max with 0"
        if name == "relax.astype" and str(value.args[0].ty.dtype).startswith(("int", "uint", "bool")):
            return "a cast from integers"
        return None

    @staticmethod
    def _non_negative_constant_operand(call):
        """The index of a constant operand ≥ 0 of a binary op (``min(x, 6)`` keeps x's zeros)."""
        for index in (0, 1):
            value = scalar_value(constant_value(call.args[index]))
            if value is not None and value >= 0:
                return index
        return None

    def _call(self, expr, name):
        """The call ``expr`` is bound to if it calls ``name`` (layouts looked through), else None."""
        bound = self.bound(expr)
        return bound if op_name(bound) == name else None

    def _clipped_to_unit(self, expr):
        """``x`` when ``expr`` is clip(x, 0, 1) (as clip, or max-then-min / min-then-max)."""
        return self._clipped(expr, 1.0)

    def _clipped(self, expr, high: float):
        """``x`` when ``expr`` is clip(x, 0, ``high``) (as clip, or max-then-min / min-then-max)."""
        outer = self.bound(expr)
        name = op_name(outer)
        if name == "relax.clip":
            return outer.args[0] if (scalar_value(constant_value(outer.args[1])), scalar_value(constant_value(outer.args[2]))) == (0.0, high) else None
        pairs = {"relax.minimum": ("relax.maximum", high, 0.0), "relax.maximum": ("relax.minimum", 0.0, high)}
        if name not in pairs or scalar_value(constant_value(outer.args[1])) != pairs[name][1]:
            return None
        inner = self._call(outer.args[0], pairs[name][0])
        return inner.args[0] if inner is not None and scalar_value(constant_value(inner.args[1])) == pairs[name][2] else None

    def _quant_levels(self, outer):
        """(``x``, L, s) when ``outer`` is round(clip(x / s, 0, L))·s with L = 2^k − 1, k ∈ 2..4
        (QONNX's unsigned Quant with zero point 0, as slimtvm's front end writes it), else None."""
        step = scalar_value(constant_value(outer.args[1]))
        rounded = self._call(outer.args[0], "relax.round")
        if op_name(outer) != "relax.multiply" or step is None or step <= 0 or rounded is None:
            return None
        for levels in (3.0, 7.0, 15.0):
            divided = self._clipped(rounded.args[0], levels)
            divided = self._call(divided, "relax.divide") if divided is not None else None
            if divided is not None and scalar_value(constant_value(divided.args[1])) == step:
                return divided.args[0], int(levels), step
        return None

    def _unipolar(self, expr):
        """(``x``, L, step) when ``expr`` is round(clip(x, 0, 1)·L)/L with L = 2^k − 1, k ∈ 1..4 (a
        DoReFa-style k-bit activation quantizer, as ONNX Clip → Mul → Round → Div; step 0), or
        :meth:`_quant_levels`' form (step s), else None."""
        outer = self.bound(expr)
        if op_name(outer) not in ("relax.divide", "relax.multiply"):
            return None
        quant = self._quant_levels(outer)
        if quant is not None:
            return quant
        factor = scalar_value(constant_value(outer.args[1]))
        rounded = self._call(outer.args[0], "relax.round")
        scaled = self._call(rounded.args[0], "relax.multiply") if rounded is not None else None
        if factor is None or scaled is None:
            return None
        levels = scalar_value(constant_value(scaled.args[1]))
        if levels not in (3.0, 7.0, 15.0):
            return None
        expected = levels if op_name(outer) == "relax.divide" else float(np.float32(1.0 / levels))
        source = self._clipped_to_unit(scaled.args[0])
        return (source, int(levels), 0.0) if factor == expected and source is not None else None

    def _pooled_binarized(self, pool):
        """Max-pool after the binarization (Conv → BN → Sign → MaxPool → Conv): max-pool commutes
        with a monotone binarizer, so the input is ``binarize(max_pool(x))``; returns a new
        ``max_pool(x)`` (same attributes), or None when ``x`` is in another layout than the pool."""
        source = self.binarized(pool.args[0])
        inner = self.bound(pool.args[0], through_layouts=False)
        if source is None or not isinstance(inner, relax.Call) or len(source.ty.shape) != len(pool.args[0].ty.shape):
            return None
        a = pool.attrs
        return self.builder_.emit(
            relax.op.nn.max_pool2d(source, a.pool_size, a.strides, a.padding, a.dilation, a.ceil_mode, a.count_include_pad, a.layout, a.out_layout),
            "pooled_before_sign",
        )

    def explicit_pad(self, expr):
        """(the pad's input, :class:`InputPadding` without the conv's own, None) when ``expr`` is a
        constant ``nn.pad`` of the spatial axes with value 0 or ±1; (``expr``, None, None) when it
        is no pad; (the pad's input, None, the reason) for any other pad — a refusal only if that
        input turns out to be binarized."""
        pad = self._call(expr, "relax.nn.pad")
        if pad is None:
            return expr, None, None
        widths = [int(v) for v in pad.attrs.pad_width]
        value = float(pad.attrs.pad_value)
        if str(pad.attrs.pad_mode) != "constant" or len(widths) not in (8, 10) or any(w for axis, w in enumerate(widths) if axis // 2 not in (2, 3)):
            return pad.args[0], None, "a Pad before the conv that pads more than the image's rows and columns, or not with a constant"
        if value not in (0.0, 1.0, -1.0):
            return pad.args[0], None, f"pad value {value:g} before the conv is neither 0 nor ±1"
        return pad.args[0], InputPadding((widths[4], widths[6], widths[5], widths[7]), value), None

    def sign_input(self, expr):
        """(``x``, the channel block of ``x``'s layout (0 for NCHW), activation levels: 1 for
        sign bits, L = 2^k − 1 for a k-bit unipolar quantizer) for a binarized input, else None.
        An explicit Pad in between is read by :meth:`explicit_pad` into ``self.padding``."""
        expr, self.padding, pad_refusal = self.explicit_pad(expr)
        source, levels, self.step = self.binarized(expr), 1, 0.0
        if source is None:
            found = self._unipolar(expr)
            if found is None:
                return None
            source, levels, self.step = found
            if self.step:
                self.form = f"{int(levels).bit_length()}-bit unipolar round(clip(x / {self.step:g}, 0, {levels}))·{self.step:g} (QONNX Quant)"
            else:
                self.form = f"{int(levels).bit_length()}-bit unipolar round(clip(x, 0, 1)·{levels})/{levels}"
        if pad_refusal is not None:  # a binarized input behind a pad no binary kernel reads
            self.refusal = pad_refusal
            return None
        shape = source.ty.shape
        if len(shape) == 5:
            return source, int(shape[4]), levels
        return (source, 0, levels) if len(shape) in (2, 4) else None

    # ------------------------------------------------------------------ dispatch

    def visit_call_(self, call):
        call = super().visit_call_(call)
        name = op_name(call)
        if name not in ("relax.nn.conv2d", "relax.matmul"):
            return call
        self.refusal, self.form, self.step = None, None, 0.0
        found = self.sign_input(call.args[0])
        if found is None and self.refusal is not None:
            return self._stays_float(call, self.refusal)
        if found is None:
            return self.float_layer(call, None)
        source, source_block, levels = found
        weight = constant_value(call.args[1])
        if weight is None:
            return self._stays_float(call, "weights are not constants")
        if levels > 1 and (name != "relax.nn.conv2d" or int(call.attrs.groups) != 1):
            if two_valued_scale(weight, 0 if name == "relax.nn.conv2d" else weight.ndim - 1)[0] is not None:
                return self._stays_float(call, "k-bit activations are supported in convs with groups = 1 only")
            return self.float_layer(call, "k-bit activations with float weights")
        if name == "relax.nn.conv2d":
            return self._conv(call, source, weight, source_block, levels)
        if self.padding is not None:
            return self._stays_float(call, "a Pad before a matmul")
        return self._dense(call, source, weight)

    def _stays_float(self, call, reason: str):
        self.report.stays_float(reason)
        return self.float_layer(call, reason)

    def _note_binary_weights(self, call):
        """Count a float-input layer whose weights are ±α per channel (BWN). It keeps the fp32
        kernel: with a float input the product needs the float values anyway, and on these CPUs
        an add/subtract kernel is no faster than a fused multiply-add one."""
        weight = constant_value(call.args[1])
        if weight is None or weight.ndim < 2:
            return
        is_conv = op_name(call) == "relax.nn.conv2d"
        if is_conv and str(call.attrs.kernel_layout) != "OIHW":
            return
        alpha, _ = two_valued_scale(weight, 0 if is_conv else weight.ndim - 1)
        if alpha is not None:
            self.report.binary_weight_layers += 1

    def _conv(self, call, source, weight, source_block, levels):
        attrs = call.attrs
        weight = weight_as_oihw(weight, str(attrs.kernel_layout)) if weight.ndim in (4, 5, 6) else None
        try:
            layouts = (source_block, channel_block(str(attrs.out_layout)))
            channel_block(str(attrs.data_layout))
        except ValueError:
            layouts = None
        if weight is None or layouts is None:
            return self._stays_float(call, f"conv layout {attrs.data_layout}/{attrs.kernel_layout} is not supported")
        alpha, reason = two_valued_scale(weight, 0)
        if alpha is None:
            return self._stays_float(call, reason)
        padding, reason = InputPadding.of(call, self.padding, levels)
        if padding is None:
            return self._stays_float(call, reason)
        self.report.binary_convs += 1
        self.report.layers.append(f"binary: input {self.form}, {padding.describe()}")
        return self.binary_conv(call, source, weight, alpha, layouts, levels, padding)

    def _dense(self, call, source, weight):
        if weight.ndim != 2 or len(call.args[0].ty.shape) != 2:
            return self._stays_float(call, "matmul is not 2-D")
        alpha, reason = two_valued_scale(weight, 1)  # weight [K, N]: output channels on axis 1
        if alpha is None:
            return self._stays_float(call, reason)
        self.report.binary_dense += 1
        self.report.layers.append(f"binary: input {self.form}")
        return self.binary_dense(call, source, weight, alpha)


@relax.expr_functor.mutator
class _Detector(BinaryLayerMatcher):
    """The matcher with its recording hooks: finds, changes nothing."""


def visit_relax_functions(mod, matcher):
    """Run ``matcher`` (a decorated :class:`BinaryLayerMatcher`) over every Relax function of
    ``mod``; the module it built."""
    for gvar, func in list(mod.functions.items()):
        if isinstance(func, relax.Function):
            matcher.builder_.update_func(gvar, matcher.visit_function(func))
    return matcher.builder_.get()


@tvm.transform.module_pass(opt_level=0, name="slimtvm.DetectBinaryLayers")
class DetectBinaryLayers:
    """Graph pass: finds the binarized conv2d/matmul layers and reports them (and why the others
    fed by a binarizer stay float). Leaves the module unchanged: the lowering
    (:mod:`slimtvm.lowering.binary_layers`) replaces them by kernels once convolutions have
    their final layouts."""

    def __init__(self):
        self.report = BinarizeReport()

    def transform_module(self, mod, _ctx):
        self.report = BinarizeReport()
        visit_relax_functions(mod, _Detector(mod, self.report))
        return mod
