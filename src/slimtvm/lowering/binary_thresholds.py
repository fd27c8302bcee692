"""Fusion between binary layers: BN (any per-channel scale and shift) → [MaxPool] → Sign feeding a
binary conv becomes integer thresholds in the *producing* binary conv, which then writes packed
bits — no float tensor exists between the two binary layers.

For a producer with dot products ``dot_c`` (integers) and scale ``α_c``, the float value feeding
the Sign is ``v_c = a_c·dot_c + b_c`` once the chain of per-channel ``add``/``multiply`` ops is
composed (a folded BN is exactly that). ``v_c ≥ 0`` (slimtvm's Sign: +1 for ≥ 0) is
``dot_c ≥ ⌈−b_c/a_c⌉`` when ``a_c > 0``, ``dot_c ≤ ⌊−b_c/a_c⌋`` when ``a_c < 0`` (the sign flip of a
negative BN scale) and the constant ``b_c ≥ 0`` when ``a_c = 0``: stored as ``flip_c·dot_c ≥ T_c``.
A max-pool between the BN and the Sign commutes with Sign (sign(max v) = OR of the signs), so it
runs on the bits as a bitwise OR. Only the values onnxruntime computes within float rounding of
the threshold can differ — the allowed difference tests detect explicitly.

Fused only when every value on the chain has one user (a residual that also reads the float
value keeps it float) and any max-pool comes after all the affine ops.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from tvm import relax

from ..conv_geometry import ConvGeometry
from ..passes.constants import constant_value

INT32_MAX = 2**31 - 1


@dataclass
class PackedConv:
    """What a groups = 1 binary conv kernel was emitted with: enough to emit it again with a
    bit output."""

    source: object  # relax expr: float input, or packed bits from a fused producer
    weight_bytes: np.ndarray
    tap_sums: np.ndarray
    alpha: np.ndarray
    channels: int
    image_hw: tuple
    strides: list
    padding: list
    dilation: list
    in_block: int
    out_block: int
    levels: int = 1  # activation levels: 1 sign bits, 2^k − 1 for k-bit unipolar input
    step: float = 0.0  # k-bit input as QONNX's Quant: q = round(clip(x / step, 0, levels)); 0: clip(x, 0, 1)·levels
    record: object = None  # its LayerRecord, which a fused consumer amends

    @property
    def out_channels(self) -> int:
        return int(self.alpha.shape[0])

    @property
    def geometry(self) -> ConvGeometry:
        kh, kw = self.weight_bytes.shape[:2]
        return ConvGeometry.of(*self.image_hw, kh, kw, self.strides, self.padding, self.dilation)


@dataclass
class ThresholdPlan:
    producer: PackedConv
    flip: np.ndarray  # int32 [O'] in {1, -1, 0}
    threshold: np.ndarray  # int32 [O']
    pool: tuple = ()
    ops: list = field(default_factory=list)  # op names on the chain, for the report


def use_counts(func: relax.Function) -> dict:
    """How many bindings (and the function's result) read each variable."""
    counts: dict = {}
    for block in func.body.blocks:
        for binding in block.bindings:
            for var in relax.analysis.free_vars(binding.value):
                counts[var] = counts.get(var, 0) + 1
    for var in relax.analysis.free_vars(func.body.body):
        counts[var] = counts.get(var, 0) + 1
    return counts


def channel_vector(expr, channels: int):
    """A constant per-channel operand (scalar, [1,C,1,1] or blocked [1,C/b,1,1,b]) as float64
    [channels]; None for anything else."""
    value = constant_value(expr)
    if value is None:
        return None
    value = np.asarray(value, dtype=np.float64)
    if value.size == 1:
        return np.full(channels, float(value.reshape(-1)[0]))
    if value.ndim == 4 and value.shape[0] == 1 and value.shape[2:] == (1, 1):
        flat = value[0, :, 0, 0]
    elif value.ndim == 5 and value.shape[0] == 1 and value.shape[2:4] == (1, 1):
        flat = value[0, :, 0, 0, :].reshape(-1)
    else:
        return None
    return flat if flat.size == channels else None


def thresholds(scale: np.ndarray, shift: np.ndarray, padded: int) -> tuple:
    """(flip, threshold) int32 [padded] with ``scale·dot + shift ≥ 0 ⇔ flip·dot ≥ threshold``."""
    flip = np.zeros(padded, dtype=np.int32)
    threshold = np.ones(padded, dtype=np.int32)  # padded channels: 0 ≥ 1 is false
    for c, (a, b) in enumerate(zip(scale, shift)):
        if a > 0:
            flip[c], bound = 1, math.ceil(-b / a)
        elif a < 0:
            flip[c], bound = -1, -math.floor(-b / a)
        else:
            flip[c], bound = 0, (0 if b >= 0 else 1)
        threshold[c] = int(np.clip(bound, -INT32_MAX, INT32_MAX))
    return flip, threshold


def _pool_attrs(call, out_var, layout_ok) -> tuple | None:
    attrs = call.attrs
    if bool(attrs.ceil_mode) or any(int(d) != 1 for d in attrs.dilation) or not layout_ok(str(attrs.layout)):
        return None
    kh, kw = (int(v) for v in attrs.pool_size)
    sh, sw = (int(v) for v in attrs.strides)
    top, left = int(attrs.padding[0]), int(attrs.padding[1])
    shape = [int(d) for d in out_var.ty.shape]
    return (kh, kw, sh, sw, top, left, shape[2], shape[3])


def threshold_plan(lookup_binding, uses: dict, sign_var, source, packed_convs: dict) -> ThresholdPlan | None:
    """The fusion plan when ``sign_var`` = sign(``source``) is fed by a chain of per-channel
    affine ops [then a max-pool] from a packed binary conv recorded in ``packed_convs`` (by
    PrimFunc name); None when the chain does not qualify."""
    if uses.get(sign_var, 0) != 1:
        return None
    var, chain, pool = source, [], ()
    while True:
        if not isinstance(var, relax.Var) or uses.get(var, 0) != 1:
            return None
        bound = lookup_binding(var)
        if not isinstance(bound, relax.Call):
            return None
        name = getattr(bound.op, "name", "")
        if name == "relax.nn.max_pool2d" and not pool and not chain:
            pool = _pool_attrs(bound, var, lambda layout: layout == "NCHW" or (layout.startswith("NCHW") and layout.endswith("c")))
            if pool is None:
                return None
            var = bound.args[0]
        elif name in ("relax.add", "relax.multiply"):
            chain.append((name, bound.args))
            var = None
            for index in (0, 1):
                if constant_value(bound.args[1 - index]) is not None:
                    var = bound.args[index]
            if var is None:
                return None
        elif name == "relax.call_tir":
            producer = packed_convs.get(bound.args[0].name_hint)
            if producer is None:
                return None
            break
        else:
            return None
    scale, shift = producer.alpha.astype(np.float64), np.zeros(producer.out_channels)
    for name, args in reversed(chain):  # graph order
        constant = args[1] if constant_value(args[1]) is not None else args[0]
        vector = channel_vector(constant, producer.out_channels)
        if vector is None:
            return None
        if name == "relax.add":
            shift = shift + vector
        else:
            scale, shift = scale * vector, shift * vector
    flip, threshold = thresholds(scale, shift, int(producer.tap_sums.shape[2]))
    return ThresholdPlan(producer, flip, threshold, pool, [name for name, _ in reversed(chain)] + (["max_pool2d"] if pool else []))
