"""``relax.layout_transform`` between NCHW and NCHW[b]c (fp32) → the register-transpose relayout
kernel (schedules/channel_relayout.py); every other layout transform keeps TVM's legalization.

The convs' layout conversion inserts these relayouts where a blocked region meets a plain one
(a model's plain input or output, a sparse conv chain kept in NCHW, an op with no blocked form
such as DenseNet's concats).
"""

from __future__ import annotations

import tvm
from tvm import relax

from ..schedules.channel_relayout import channel_relayout_primfunc

# sample points (n, channel, h, w) the index map must send where a channel-block relayout would
_PROBES = ((0, 0, 0, 0), (0, 1, 0, 0), (1, 17, 2, 3), (0, 5, 1, 0))


def channel_relayout_of(call):
    """``(batch, channels, height, width, block, to_blocked)`` when ``call`` (a
    ``relax.layout_transform``) moves a static float32 tensor between NCHW and NCHW[block]c
    (block a power of two up to 16, no padding, at least one tile of ``block`` pixels: a global
    pool's 1 × 1 output keeps TVM's relayout, which fuses with the flatten after it), else None."""
    source, dest = getattr(call.args[0].ty, "shape", None), getattr(call.ty, "shape", None)
    if source is None or dest is None or str(call.args[0].ty.dtype) != "float32" or call.attrs.pad_value is not None:
        return None
    if not all(isinstance(v, tvm.tirx.IntImm) for v in (*source, *dest)):
        return None
    source, dest = [int(v) for v in source], [int(v) for v in dest]
    if len(source) == 4 and len(dest) == 5:
        (batch, channels, height, width), block, to_blocked = source, dest[4], True
    elif len(source) == 5 and len(dest) == 4:
        (batch, channels, height, width), block, to_blocked = dest, source[4], False
    else:
        return None
    if block < 2 or block > 16 or block & (block - 1) or channels % block or height * width < block:
        return None
    blocked = [batch, channels // block, height, width, block]
    if (dest if to_blocked else source) != blocked:
        return None
    for n, c, h, w in _PROBES:
        n, c, h, w = min(n, batch - 1), c % channels, min(h, height - 1), min(w, width - 1)
        point, expected = ((n, c, h, w), (n, c // block, h, w, c % block)) if to_blocked else ((n, c // block, h, w, c % block), (n, c, h, w))
        if [int(v) for v in call.attrs.index_map.map_indices(list(point))] != list(expected):
            return None
    return batch, channels, height, width, block, to_blocked


def legalize_layout_transform(bb, call):
    """The relayout kernel for a channel-block relayout (:func:`channel_relayout_of`), TVM's
    legalization for any other layout transform."""
    shape = channel_relayout_of(call)
    if shape is None:
        return tvm.ir.Op.get("relax.layout_transform").get_attr("FLegalize")(bb, call)
    gvar = bb.add_func(channel_relayout_primfunc(*shape), "channel_relayout")
    return relax.call_tir(gvar, [call.args[0]], relax.TensorType([int(v) for v in call.ty.shape], "float32"))
