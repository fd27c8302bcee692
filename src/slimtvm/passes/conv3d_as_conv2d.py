"""3-D convs (video: torchvision's R3D, R(2+1)D) as 2-D convs over frames, so slimtvm's conv kernels run them.

A conv over ``[N, C, T, H, W]`` with a ``kt × kh × kw`` kernel sums, for output frame ``t``, the
2-D convs of input frames ``t · st + i · dt − pt`` (``i < kt``; frames outside the clip are
zero padding) with the kernel's slices ``w[:, :, i]``. That is one 2-D conv of the ``kt`` frames
stacked along the channels, ``[kt · C, H, W]``, with the weights ``w'[o, i · C + c] = w[o, c,
i]``, and every output frame is an image of a batch of ``N · T_out``:

    x → [N, T, C, H, W] (zero frames before and after) → for each tap i the frames
    i · dt, i · dt + st, … → stacked along channels → [N · T_out, kt · C, H, W]
    → conv2d (kh × kw, the spatial strides, padding and dilation) → [N, T_out, O, H', W'] → [N, O, T_out, H', W']

The same products, summed in another order (taps of one output, all in fp32): within rounding of
the 3-D conv. TVM has no CPU schedule for ``conv3d``: its generic one ran torchvision's R3D-18
(16 frames of 112 × 112 in 8) 36× slower than onnxruntime (Emerald Rapids, 1 thread).

Rewrites ``relax.nn.conv3d`` in NCDHW / OIDHW with a constant weight, static shapes and one
group. Leaves grouped 3-D convs (channel-separated networks) on TVM's schedule, where
``compile`` names them among the generic fallbacks.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from .constants import constant_value
from .relax_functions import rewrite_relax_functions
from .static_shapes import static_shape


@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    def __init__(self, mod):
        super().__init__(mod)
        self.count = 0

    def visit_call_(self, call):
        call = super().visit_call_(call)
        if not isinstance(call.op, tvm.ir.Op) or call.op.name != "relax.nn.conv3d":
            return call
        attrs = call.attrs
        if (str(attrs.data_layout), str(attrs.kernel_layout)) != ("NCDHW", "OIDHW") or str(attrs.out_layout) not in ("NCDHW", "") or int(attrs.groups) != 1:
            return call
        weight = constant_value(call.args[1])
        data_shape, out_shape = static_shape(call.args[0]), static_shape(call)
        if weight is None or data_shape is None or out_shape is None or weight.ndim != 5:
            return call
        self.count += 1
        return _as_conv2d(call.args[0], weight, data_shape, out_shape, attrs)


def _as_conv2d(data, weight: np.ndarray, data_shape: list, out_shape: list, attrs):
    """The module docstring's rewrite of one conv3d call."""
    batch, channels = data_shape[:2]
    out_channels, _, taps = weight.shape[:3]
    out_frames = out_shape[2]
    stride, dilation = [int(v) for v in attrs.strides], [int(v) for v in attrs.dilation]
    front, top, left, back, bottom, right = (int(v) for v in attrs.padding)
    clip = relax.op.permute_dims(data, [0, 2, 1, 3, 4])  # [N, T, C, H, W]
    if front or back:
        clip = relax.op.nn.pad(clip, [0, 0, front, back, 0, 0, 0, 0, 0, 0])
    stacked = [
        relax.op.strided_slice(clip, axes=[1], begin=[i * dilation[0]], end=[i * dilation[0] + (out_frames - 1) * stride[0] + 1], strides=[stride[0]])
        for i in range(taps)
    ]
    images = stacked[0] if taps == 1 else relax.op.concat(stacked, axis=2)
    images = relax.op.reshape(images, [batch * out_frames, taps * channels, data_shape[3], data_shape[4]])
    weight2d = np.ascontiguousarray(weight.transpose(0, 2, 1, 3, 4).reshape(out_channels, taps * channels, *weight.shape[3:]))
    out_dtype = str(attrs.out_dtype)
    conv = relax.op.nn.conv2d(
        images,
        relax.const(weight2d),
        strides=stride[1:],
        padding=[top, left, bottom, right],
        dilation=dilation[1:],
        groups=1,
        data_layout="NCHW",
        kernel_layout="OIHW",
        out_layout="NCHW",
        out_dtype=None if out_dtype in ("", "void", "None") else out_dtype,
    )
    conv = relax.op.reshape(conv, [batch, out_frames, out_channels, out_shape[3], out_shape[4]])
    return relax.op.permute_dims(conv, [0, 2, 1, 3, 4])


@tvm.transform.module_pass(opt_level=0, name="slimtvm.Conv3dAsConv2d")
class Conv3dAsConv2d:
    """Relax module pass (module docstring); ``rewritten`` counts the 3-D convs."""

    def __init__(self):
        self.rewritten = 0

    def transform_module(self, mod, _ctx):
        rewriter = _Rewriter(mod)
        mod = rewrite_relax_functions(mod, rewriter)
        self.rewritten = rewriter.count
        return mod
