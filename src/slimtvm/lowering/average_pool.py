"""Average pools whose every window lies inside the image → a window sum divided by a constant.

TVM's legalization (TOPI's ``pool2d``) divides each sum by a per-pixel count written as products
of ``min`` terms, which hold for pooling with padding or ceil mode. Without either, every window
has ``kh · kw`` elements, but the expression stays in the kernel: its division stage did not
vectorize, and LLVM vectorized across the row's pixels with gathers and scatters instead
(Bi-Real Net 18's 2 × 2 average pools of its downsampling shortcuts, 64 × 56 × 56: 47 µs with
the input in cache, Zen 5, 1 thread). Here the sum is TOPI's reduction and the division is by
the constant count, as onnxruntime's kernel divides: the same results (a power-of-two count
divides exactly either way).

Pools with padding, ceil mode, dilation, or a layout other than NCHW / NCHW[x]c keep TVM's
legalization.
"""

from __future__ import annotations

import re

import tvm
from tvm import te

BLOCKED_OR_PLAIN = re.compile(r"^NCHW(\d+c)?$")


def legalize_avg_pool2d(bb, call):
    """``relax.nn.avg_pool2d`` without padding, ceil mode or dilation, in NCHW or NCHW[x]c, float
    → :func:`window_average`; anything else → TVM's default."""
    attrs = call.attrs
    layout, data = str(attrs.layout), call.args[0]
    plain = (
        BLOCKED_OR_PLAIN.match(layout)
        and str(attrs.out_layout) == layout
        and not bool(attrs.ceil_mode)
        and all(int(p) == 0 for p in attrs.padding)
        and all(int(d) == 1 for d in attrs.dilation)
        and str(data.ty.dtype).startswith("float")
    )
    if not plain:
        return tvm.ir.Op.get("relax.nn.avg_pool2d").get_attr("FLegalize")(bb, call)
    kernel = tuple(int(k) for k in attrs.pool_size)
    strides = tuple(int(s) for s in attrs.strides)
    return bb.call_te(window_average, data, kernel, strides, primfunc_name_hint="avg_pool2d")


def window_average(data: te.Tensor, kernel: tuple, strides: tuple) -> te.Tensor:
    """Mean over ``kernel`` windows every ``strides`` of axes 2 and 3 (H and W of NCHW or
    NCHW[x]c): a sum stage (``pool_sum``) and a division by ``kh · kw`` (``pool_avg``)."""
    kh, kw = kernel
    sh, sw = strides
    shape = list(data.shape)
    out_h, out_w = (shape[2] - kh) // sh + 1, (shape[3] - kw) // sw + 1
    out_shape = [shape[0], shape[1], out_h, out_w, *shape[4:]]
    ry, rx = te.reduce_axis((0, kh), name="ry"), te.reduce_axis((0, kw), name="rx")
    sums = te.compute(
        out_shape,
        lambda n, c, y, x, *lane: te.sum(data[(n, c, y * sh + ry, x * sw + rx, *lane)], axis=[ry, rx]),
        name="pool_sum",
    )
    count = tvm.tirx.const(kh * kw, data.dtype)
    return te.compute(out_shape, lambda *index: sums[index] / count, name="pool_avg")
