"""fp32 NCHW ↔ NCHW[b]c relayouts as b × b register transposes.

TVM's ``layout_transform`` compute walks its source in order and writes the destination at the
mapped index, so one side is read or written with a stride of a channel plane or of b floats: a
plain → NCHW16c relayout wrote each 64-byte output line 16 times, a whole channel plane apart
(192 × 28 × 28 floats: 100 µs on Zen 4, 1 thread — 6 GB/s). Here each task takes b channels of a
run of pixels: per tile of b pixels it loads b vectors of b floats along the source's contiguous
axis, transposes them in registers (log2(b) rounds of two-input shuffles,
:func:`~slimtvm.schedules.transpose_intrin.transposed_rows`) and stores b vectors along the
destination's contiguous axis. Pixels past the last whole tile (196 = 12 · 16 + 4) are copied
one by one. Tasks are images × channel groups × runs of tiles, at least
:data:`~slimtvm.schedules.stages.MIN_PARALLEL_CHUNKS` where there are enough tiles.

The PrimFunc is written whole (one block, its parallel loop inside): the generic rule leaves it
as it is and ``tune --all-kernels`` leaves it out (:func:`is_channel_relayout`); the kernel
report counts it with the other layout kernels.
"""

from __future__ import annotations

import math

from tvm import tirx
from tvm.script import tirx as T

from .stages import MIN_PARALLEL_CHUNKS, find_block
from .transpose_intrin import transposed_rows
from .whole_kernel import whole_kernel

RELAYOUT_BLOCK = "channel_relayout"


def channel_relayout_primfunc(batch: int, channels: int, height: int, width: int, block: int, to_blocked: bool) -> tirx.PrimFunc:
    """``(x, out)``: NCHW → NCHW[block]c when ``to_blocked``, else back, for float32 tensors of
    ``batch`` images of ``channels`` × ``height`` × ``width``. Refuses a ``block`` that is not a
    power of two from 2 to 16, channels that are not whole blocks, and images of fewer than
    ``block`` pixels (no whole tile: TVM's own relayout, which can fuse with its neighbours)."""
    if block < 2 or block > 16 or block & (block - 1):
        raise ValueError(f"channel block {block}: a power of two from 2 to 16")
    if channels % block:
        raise ValueError(f"{channels} channels do not fill blocks of {block}")
    pixels, groups = height * width, channels // block
    if pixels < block:
        raise ValueError(f"{height} × {width} pixels: fewer than one tile of {block}")
    tiles, images_groups = pixels // block, batch * groups
    runs = max(1, min(tiles, math.ceil(MIN_PARALLEL_CHUNKS / images_groups)))
    tiles_per_run = math.ceil(tiles / runs)
    plain, blocked = (batch, channels, height, width), (batch, groups, height, width, block)
    source_shape, dest_shape = (plain, blocked) if to_blocked else (blocked, plain)
    vector = f"float32x{block}"

    def plain_at(group, lane, pixel):  # group: image · groups + channel group
        return (group * block + lane) * pixels + pixel

    def blocked_at(group, pixel, lane):
        return (group * pixels + pixel) * block + lane

    with whole_kernel(RELAYOUT_BLOCK, source_shape, dest_shape) as (builder, source, dest):

        def copy_one(group, lane, pixel):
            if to_blocked:
                T.buffer_store(dest, source[plain_at(group, lane, pixel)], [blocked_at(group, pixel, lane)])
            else:
                T.buffer_store(dest, source[blocked_at(group, pixel, lane)], [plain_at(group, lane, pixel)])

        def transpose_tile(group, first):
            if to_blocked:  # vector i: channel i's pixels; row j: pixel j's channels
                loaded = [source.vload([plain_at(group, i, first)], vector) for i in range(block)]
                for j, row in enumerate(transposed_rows(loaded, block, block)):
                    T.buffer_store(dest, row, [tirx.Ramp(blocked_at(group, first + j, 0), 1, block)])
            else:  # vector i: pixel i's channels; row j: channel j's pixels
                loaded = [source.vload([blocked_at(group, first + i, 0)], vector) for i in range(block)]
                for j, row in enumerate(transposed_rows(loaded, block, block)):
                    T.buffer_store(dest, row, [tirx.Ramp(plain_at(group, j, first), 1, block)])

        with T.parallel(0, images_groups * runs) as task:
            group, run = task // runs, task % runs
            with T.serial(0, tiles_per_run) as t:
                tile = run * tiles_per_run + t
                with T.If(tile < tiles):
                    with T.Then():
                        transpose_tile(group, tile * block)
            if pixels % block:  # the pixels after the last whole tile, by the last run
                with T.If(run == runs - 1):
                    with T.Then():
                        with T.serial(tiles * block, pixels) as pixel:
                            with T.serial(0, block) as lane:
                                copy_one(group, lane, pixel)
    return builder.get()


def is_channel_relayout(sch) -> bool:
    """Whether the PrimFunc in ``sch`` (an ``s_tir.Schedule``) is this kernel."""
    return find_block(sch, RELAYOUT_BLOCK) is not None
