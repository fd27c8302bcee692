"""Transposed convs (ConvTranspose: UNet and decoder up-convs) as one ordinary conv and a depth-to-space.

TVM's ``conv2d_transpose`` had no slimtvm kernel: it ran on the generic schedule, 68× onnxruntime's
time for a 2×2/2 up-conv of 64 channels at 56×56 (1 thread, Zen 5). With stride ``s``, each of
the ``s × s`` phases of the output (the pixels ``(s·q + r_y, s·q' + r_x)``) is an ordinary
correlation of the input with the taps ``w[…, s·m + b_y, s·m' + b_x]`` of one residue, reversed;
so the transposed conv is one conv (stride 1) with ``s² · C_out`` output channels on the padded
input, then the phases interleaved into the image (a depth-to-space) and the image cropped to the
transposed conv's size. A 2×2/2 up-conv becomes a 1×1 conv with no extra work; a 4×4/2 one
(padding 1) a 3×3 conv with 2×2 live taps per phase, a 3×3/2 one a 2×2 conv.

In 1-D (each image axis alike): with ``c = r + p_begin = s·a + b``, phase ``r`` takes
``n_b = ⌈(k − b) / s⌉`` taps, ``out_r[q] = Σ_m x[q + a − m] · w[s·m + b]``; on the input padded by
``P = max_r(n_b − 1 − a)`` in front, tap ``u`` of the common ``K = max_r(a + P) + 1`` taps is
``w[s·(a + P − u) + b]`` where that index is one of the phase's taps, else 0.

Rewrites ``relax.nn.conv2d_transpose`` with NCHW data, IOHW constant float32 weight, groups 1,
dilation 1, static shapes; refuses (leaves to TVM) everything else.
"""

from __future__ import annotations

import math

import numpy as np
import tvm
from tvm import relax

from ..passes.constants import constant_value
from ..passes.detect_binary import op_name
from ..passes.relax_functions import rewrite_relax_functions


def phase_taps(kernel: int, stride: int, pad_begin: int) -> tuple:
    """``(P, K, taps)`` for one image axis: the input's front padding, the common kernel size, and
    per phase ``r`` the transposed conv's tap index at each of the ``K`` taps (−1: none)."""
    phases = []
    for r in range(stride):
        a, b = divmod(r + pad_begin, stride)
        phases.append((a, b, math.ceil((kernel - b) / stride) if kernel > b else 0))
    front = max(n - 1 - a for a, _, n in phases)
    size = max(a + front for a, _, _ in phases) + 1
    taps = []
    for a, b, n in phases:
        row = []
        for u in range(size):
            m = a + front - u
            row.append(stride * m + b if 0 <= m < n else -1)
        taps.append(row)
    return front, size, taps


def phase_weights(weight: np.ndarray, strides: tuple, pads: tuple) -> tuple:
    """``(conv weight OIHW [s_h·s_w·C_out, C_in, K_h, K_w], (P_h, P_w), (K_h, K_w))`` for an IOHW
    transposed-conv ``weight``; output channel ``(r_y · s_w + r_x) · C_out + c``."""
    c_in, c_out, k_h, k_w = weight.shape
    (front_h, size_h, taps_h), (front_w, size_w, taps_w) = (phase_taps(k_h, strides[0], pads[0]), phase_taps(k_w, strides[1], pads[1]))
    result = np.zeros((strides[0] * strides[1] * c_out, c_in, size_h, size_w), weight.dtype)
    for ry in range(strides[0]):
        for rx in range(strides[1]):
            first = (ry * strides[1] + rx) * c_out
            for u, th in enumerate(taps_h[ry]):
                for v, tw in enumerate(taps_w[rx]):
                    if th >= 0 and tw >= 0:
                        result[first : first + c_out, :, u, v] = weight[:, :, th, tw].T
    return result, (front_h, front_w), (size_h, size_w)


def _rewritable(call) -> bool:
    if op_name(call) != "relax.nn.conv2d_transpose":
        return False
    attrs = call.attrs
    if str(attrs.data_layout) != "NCHW" or str(attrs.kernel_layout) != "IOHW" or str(attrs.out_layout) != "NCHW" or int(attrs.groups) != 1:
        return False
    if any(int(d) != 1 for d in attrs.dilation):
        return False
    weight = constant_value(call.args[1])
    shapes = [getattr(expr.ty, "shape", None) for expr in (call.args[0], call)]
    if weight is None or weight.dtype != np.float32 or weight.ndim != 4 or any(shape is None or len(shape) != 4 for shape in shapes):
        return False
    return all(isinstance(d, tvm.tirx.IntImm) for shape in shapes for d in shape)


@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    def __init__(self, mod):
        super().__init__(mod)
        self.count = 0
        self.seen = 0
        self.positions: list = []

    def visit_call_(self, call):
        call = super().visit_call_(call)
        if op_name(call) == "relax.nn.conv2d_transpose":
            self.seen += 1
        if not _rewritable(call):
            return call
        self.count += 1
        self.positions.append(self.seen - 1)
        attrs, op = call.attrs, relax.op
        strides = tuple(int(s) for s in attrs.strides)
        pad_top, pad_left = int(attrs.padding[0]), int(attrs.padding[1])
        n, _, in_h, in_w = (int(d) for d in call.args[0].ty.shape)
        _, c_out, out_h, out_w = (int(d) for d in call.ty.shape)
        weight, (front_h, front_w), (size_h, size_w) = phase_weights(constant_value(call.args[1]), strides, (pad_top, pad_left))
        rows, cols = math.ceil(out_h / strides[0]), math.ceil(out_w / strides[1])  # each phase's outputs (the largest)
        back_h, back_w = rows + size_h - 1 - front_h - in_h, cols + size_w - 1 - front_w - in_w
        data = call.args[0]
        if back_h < 0 or back_w < 0:  # an input longer than the phases read: its tail is cut
            data = op.strided_slice(data, axes=[2, 3], begin=[0, 0], end=[in_h + min(back_h, 0), in_w + min(back_w, 0)])
        conv = op.nn.conv2d(
            data, relax.const(weight, "float32"), padding=[front_h, front_w, max(back_h, 0), max(back_w, 0)], data_layout="NCHW", kernel_layout="OIHW"
        )
        phases = op.reshape(conv, [n, strides[0], strides[1], c_out, rows, cols])
        image = op.reshape(op.permute_dims(phases, [0, 3, 4, 1, 5, 2]), [n, c_out, rows * strides[0], cols * strides[1]])
        if (rows * strides[0], cols * strides[1]) != (out_h, out_w):
            image = op.strided_slice(image, axes=[2, 3], begin=[0, 0], end=[out_h, out_w])
        return image


@tvm.transform.module_pass(opt_level=0, name="slimtvm.TransposedConvs")
class TransposedConvs:
    """Module pass (before the layout conversion): each rewritable ``conv2d_transpose`` (module doc)
    → conv + depth-to-space; ``count`` says how many, ``positions`` which (their indices among the
    module's transposed convs, in graph order)."""

    def __init__(self):
        self.count = 0
        self.positions: list = []

    def transform_module(self, mod, _ctx):
        rewriter = _Rewriter(mod)
        mod = rewrite_relax_functions(mod, rewriter)
        self.count, self.positions = rewriter.count, rewriter.positions
        return mod
