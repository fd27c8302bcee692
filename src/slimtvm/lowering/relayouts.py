"""Relayouts between plain NCHW and blocked NCHW[x]c tensors: recognising and emitting them
(shared by the passes that move ops across them: sink_relayouts, blocked_resize_concat,
pool_before_relayout)."""

from __future__ import annotations

from tvm import relax


def op_name(expr) -> str:
    """The Relax op a call applies ("relax.add", ...); "" for anything else."""
    return getattr(expr.op, "name", "") if isinstance(expr, relax.Call) else ""


def rank(expr) -> int:
    """The tensor rank of ``expr``, -1 where its shape is unknown."""
    shape = getattr(expr.ty, "shape", None)
    return len(shape) if shape is not None else -1


def same_channels(blocked, plain) -> bool:
    """Whether a 5-D NCHW[b]c tensor and a 4-D NCHW one hold the same channels (no channel
    padding in the relayout between them: only then is the plain form the blocked one's)."""
    try:
        b_shape, p_shape = [int(v) for v in blocked.ty.shape], [int(v) for v in plain.ty.shape]
    except (TypeError, ValueError):  # symbolic dimensions
        return False
    return b_shape[1] * b_shape[4] == p_shape[1] and b_shape[0] == p_shape[0] and b_shape[2:4] == p_shape[2:4]


def to_plain(expr, block: int):
    """NCHW[block]c → NCHW."""
    return relax.op.layout_transform(expr, index_map=lambda n, c, h, w, b: (n, c * block + b, h, w))


def to_blocked(expr, block: int):
    """NCHW → NCHW[block]c (channels a multiple of ``block``)."""
    return relax.op.layout_transform(expr, index_map=lambda n, c, h, w: (n, c // block, h, w, c % block))
