"""fp32 conv2d in the blocked NCHW[x]c layout: computes, CPU schedule and design spaces.

Compute: TOPI's ``conv2d_NCHWc`` (data ``[N, C/x, H, W, x]``, kernel ``OIHW[x]i[x]o``), reached by
Relax's ``ConvertLayout`` and the legalization in lowering/conv_layouts.py; and
:func:`plain_input_conv2d_nchwc` for RGB stems.

Schedule: the classic direct convolution that TVM ≤ 0.19 used on x86, with the output pixels of
each channel block numbered in one run (``p = row · width + column``, by
``transform_block_layout``), so that a register tile of ``px`` consecutive pixels × ``oc_tile``
channel blocks may wrap from one row to the next. A 7 × 7 output then splits into 16 tiles of 3
pixels and a single 1-pixel tail, where per-row tiles left a 1-pixel tail on every row (7 = 3 + 3 + 1)
and ran ResNet's last stage 16% slower. The tile is held in ``oc_tile · px`` vector registers; the
reduction runs over input-channel chunks, kernel rows, the input-channel block and the (unrolled)
kernel columns, each step broadcasting one input value against a vector of weights. The tail
tile is a loop partition of its own, so the full tiles carry no bounds check.

Work is parallel over (batch, groups of ``oc_tile`` channel blocks, chunks of ``rows`` output
rows; at least ``MIN_PARALLEL_CHUNKS`` chunks where one-row chunks allow it; the row chunks
outside the channel groups where the weights are small, :func:`~.stages.spatial_partition`,
so that each core reads back the pixels it wrote). Where the chunk is
a whole number of tiles, the fused epilogue (bias, ReLU, residual add, …) runs on each tile as
soon as its reduction ends, from the registers; otherwise (a tail tile, ``channels_outside``,
weight prefetch) the chunk's accumulators are stored to a small buffer and the epilogue reads
them back. The per-chunk buffer cost convs with short reductions most: LLVM zeroed it in memory
before each tile and stored and reloaded every accumulator, three vector stores per output vector
against 16 multiply-adds for 16 input channels. On Zen 4 (1 thread) the per-tile epilogue took
MobileNetV2's 16 → 96 expansion at 112×112 from 0.61 to 0.40 ms alone (``conv_layers.py``) and
from 0.81 to 0.47 ms in the model, its 3×3/2 stem from 0.47 to 0.32 ms, and the model's kernels
from 9.3 to 8.5 ms; ResNet-18 and the AVX2 builds were unchanged. Zero padding runs as its own
parallel, vectorized stage.

``channels_outside``: the input-channel chunks loop outside the pixel tiles (as MLAS's NCHWc
kernel does), so one chunk's weights (9 KB for a 3×3 kernel) stay in L1 for every tile of the
chunk, and each tile's accumulators are reloaded once per input-channel block. Otherwise every
tile streams all its weights (up to 590 KB on ResNet's last stage) from L2 or L3.

Weight prefetch (16-lane targets): in the per-tile form on small images
(:data:`TILE_PREFETCH_MAX_SHARES` pixel chunks per channel group or fewer, at least
:data:`TILE_PREFETCH_MIN_WEIGHT_BYTES` of weights, channel groups outermost, and at least one
cache line of the group's weights per step of its chunks' tiles) each chunk of a group
prefetches a share of the next group's weights (``lowering/weight_prefetch.py``). Until session
45 convs with more than 1 MB of weights whose chunks hold several tiles ran those tiles inside
chunks of input channels, each step prefetching a share of the next chunk (written for
ResNet-18's last stage on Zen 5, 1.21 → 0.99 ms per conv, which has since moved to other
kernels). On Zen 4 every conv that still took that form ran faster without it, at 1 and 2
threads (per kernel in the model, builds in turns, µs at 1 thread): ResNet-50's 1×1/2 convs at
14×14 and 7×7 2,128 → 1,886 and 2,119 → 1,942, its 512 → 2048 1×1 at 7×7 1,049–1,081 →
942–977, its 3×3/2 at 14×14 2,387 → 2,163, ConvNeXt-T's MLP convs at 14×14 2,144–2,237 →
2,047–2,143; whole runs 0.97–0.98 of their time (ResNet-18, ResNet-50, Wide ResNet-50-2,
ResNeXt-50, ConvNeXt-T, Inception v3, AlexNet at 1 thread; EfficientNetV2-S 1.005). The form
was removed: such convs run in the per-tile form where their chunks are whole tiles (with the
per-tile prefetch where it applies), else with the tiles outside the reduction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import tvm
from tvm import s_tir, te, topi

from ..conv_geometry import ConvGeometry
from .cpu_rule import CPURule
from .stages import MIN_PARALLEL_CHUNKS, schedule_padding, spatial_partition, split_stages, zero_padded

CONV_BLOCK = "conv2d_NCHWc"
TILE_PREFETCH_ANNOTATION = "slimtvm.prefetch_next_group_weights"  # the per-tile form's (the same pass)


def plain_input_conv2d_nchwc(data, kernel, strides, padding, dilation, out_dtype):
    """Conv from a plain NCHW input to NCHW[x]c output; kernel ``OIHW[x]o``, padding (t, l, b, r).

    The block is named like TOPI's conv2d_NCHWc and has the same iterators (n, oc_chunk, oh, ow,
    oc_block, ic, kh, kw), so the same register-tiled schedule and template apply. Made for RGB
    stems: each input value is broadcast against a vector of ``x`` output channels, as MLAS does,
    instead of padding 3 input channels to a block of 8.
    """
    n, channels, height, width = data.shape
    o_chunks, _, kh, kw, o_block = kernel.shape
    geometry = ConvGeometry.of(height, width, kh, kw, strides, padding, dilation)
    padded = zero_padded(data, geometry)
    ic = te.reduce_axis((0, channels), name="ic")
    ry = te.reduce_axis((0, kh), name="kh")
    rx = te.reduce_axis((0, kw), name="kw")
    return te.compute(
        (n, o_chunks, geometry.out_h, geometry.out_w, o_block),
        lambda b, oc, y, x, ob: te.sum(
            padded[b, ic, geometry.padded_row(y, ry), geometry.padded_col(x, rx)].astype(out_dtype) * kernel[oc, ic, ry, rx, ob].astype(out_dtype),
            axis=[ic, ry, rx],
        ),
        name=CONV_BLOCK,
    )


def blocked_conv2d_nchwc(data, kernel, strides, padding, dilation, out_dtype, used_channels: int):
    """TOPI's ``conv2d_NCHWc`` (groups 1: same block name, iterators and index expressions, so the
    same schedule and templates apply) reducing over the first ``used_channels`` input channels
    only: the weights of the others are all zero (:func:`used_input_channels`), so the sum is
    the same, in the same order, without them. ``padding`` is (top, left, bottom, right).

    Channels padded to the block are what leaves such a tail: a 24-channel tensor runs as 32 on
    16-lane targets (lowering/pad_channels.py), and a 1×1 conv reading it multiplied a quarter of
    its inputs by zero weights (MobileNetV2's 24 → 144 expansions at 56 × 56; MnasNet's,
    MobileNetV3's and EfficientNet's 24- and 40-channel stages)."""
    n, chunks, height, width, block = (int(d) for d in data.shape)
    out_chunks, _, kh, kw, _, out_block = (int(d) for d in kernel.shape)
    if not 0 < used_channels <= chunks * block:
        raise ValueError(f"used input channels {used_channels} outside 1..{chunks * block}")
    geometry = ConvGeometry.of(height, width, kh, kw, strides, padding, dilation)
    padded = zero_padded(data, geometry)
    ic = te.reduce_axis((0, used_channels), name="ic")
    ry = te.reduce_axis((0, kh), name="kh")
    rx = te.reduce_axis((0, kw), name="kw")
    div, mod = tvm.tirx.indexdiv, tvm.tirx.indexmod
    return te.compute(
        (n, out_chunks, geometry.out_h, geometry.out_w, out_block),
        lambda b, oc, y, x, ob: te.sum(
            padded[b, div(ic, block), geometry.padded_row(y, ry), geometry.padded_col(x, rx), mod(ic, block)].astype(out_dtype)
            * kernel[oc, div(ic, block), ry, rx, mod(ic, block), ob].astype(out_dtype),
            axis=[ic, ry, rx],
        ),
        name=CONV_BLOCK,
        tag=CONV_BLOCK,
    )


def used_input_channels(weight) -> int:
    """1 + the last input channel with a non-zero weight of a blocked ``OIHW[x]i[y]o`` weight
    (numpy), at least 1: the input channels after it contribute nothing."""
    out_chunks, in_chunks, kh, kw, in_block, out_block = weight.shape
    nonzero = np.any(weight != 0, axis=(0, 2, 3, 5)).reshape(in_chunks * in_block)
    found = np.flatnonzero(nonzero)
    return int(found[-1]) + 1 if found.size else 1


def grouped_conv2d_blocked(data, kernel, strides, padding, dilation, groups, out_dtype):
    """NCHW[x]c grouped conv = unpack → TOPI group_conv2d_nchw → pack, in one TE graph."""
    n, c_chunks, h, w, c_block = data.shape
    o_chunks, i_chunks, kh, kw, i_block, o_block = kernel.shape
    plain_data = te.compute((n, c_chunks * c_block, h, w), lambda b, c, y, x: data[b, c // c_block, y, x, c % c_block], name="unpack_data")
    plain_kernel = te.compute(
        (o_chunks * o_block, i_chunks * i_block, kh, kw),
        lambda o, i, y, x: kernel[o // o_block, i // i_block, y, x, i % i_block, o % o_block],
        name="unpack_kernel",
    )
    out = topi.nn.group_conv2d_nchw(plain_data, plain_kernel, strides, padding, dilation, groups, out_dtype)
    on, oc, oh, ow = out.shape
    return te.compute((on, oc // o_block, oh, ow, o_block), lambda b, c, y, x, cb: out[b, c * o_block + cb, y, x], name="pack_output")


@dataclass(frozen=True)
class ConvTile:
    """A register tile of ``oc_tile`` channel blocks × ``px`` consecutive output pixels, in
    parallel chunks of ``rows`` output rows."""

    oc_tile: int
    px: int
    rows: int
    channels_outside: bool = False
    chunk_pixels: int = 0  # where set: chunks of this many (flattened) pixels instead of ``rows`` rows


MAX_CHUNK_PIXELS = 256  # a chunk's accumulators stay ≤ oc_tile · 256 · 32 B: in L1/L2


def accumulator_budget(lanes: int) -> int:
    """Channel-block accumulators a tile may hold: 12 of 16 ymm (AVX2), 12 × 2 of 32 q (NEON,
    8-channel blocks), 24 of 32 zmm (AVX-512); the rest hold the broadcast input and weights."""
    return 24 if lanes >= 16 else 12


def chunk_rows(out_h: int, out_w: int, groups: int, px: int) -> int:
    """Output rows per parallel chunk: the largest divisor of ``out_h`` whose chunk has at most
    :data:`MAX_CHUNK_PIXELS` pixels, fills its ``px``-pixel tiles to :data:`MIN_TILE_FILL`, and
    leaves at least :data:`MIN_PARALLEL_CHUNKS` chunks with the ``groups`` (batch × groups of
    channel blocks) the chunk loop also runs over; where none leaves that many, the smallest such
    divisor. Chunks are whole rows because the convolution is computed at the chunk in flattened
    pixels (row · width + column), which a part of a row would turn into a bounding box of whole
    rows, computed twice. The fill rule keeps AVX2's 3-pixel tiles off 7-pixel rows
    (3 + 3 + 1: ResNet's last stage ran 16% slower with per-row tiles on Zen 2).

    Before the chunk count was a rule (session 16), chunks were as large as
    :data:`MAX_CHUNK_PIXELS` allowed: MobileNetV2's 14×14 and 7×7 1×1 convs had 2–5 chunks, so
    two threads ran them 1.0–1.3× faster than one (``benchmarks/profile_kernels.py mobilenet_v2
    --threads 1,2``) and sixteen could not have used more than five cores."""
    fitting = [d for d in range(1, out_h + 1) if out_h % d == 0 and (d * out_w <= MAX_CHUNK_PIXELS or d == 1)]
    filled = [d for d in fitting if tile_fill(px, d * out_w) >= MIN_TILE_FILL] or [max(fitting)]
    enough = [d for d in filled if groups * (out_h // d) >= MIN_PARALLEL_CHUNKS]
    return max(enough) if enough else min(filled)


MIN_TILE_FILL = 0.85


def tile_fill(px: int, chunk: int) -> float:
    """The share of a chunk's tile slots that hold pixels, with the tile evened out over the
    chunk (:func:`balanced_pixels`): 7 pixels in 3-pixel tiles fill 7 / 9."""
    tile = balanced_pixels(max(1, min(px, chunk)), chunk)
    return chunk / (-(-chunk // tile) * tile)


def balanced_pixels(px: int, chunk: int) -> int:
    """The pixel tile for a chunk of ``chunk`` pixels: as many tiles as ``px`` needs, evened out,
    so that a 14-pixel row runs as 7 + 7 rather than 10 + 4 (the tail tile is its own loop)."""
    tiles = -(-chunk // px)
    return -(-chunk // tiles)


def default_tile(
    oc_chunks: int,
    out_h: int,
    out_w: int,
    budget: int = 12,
    in_channels: int = 0,
    kernel_taps: int = 1,
    lanes: int = 8,
    batch: int = 1,
    column_stride: int = 1,
    kernel_w: int = 1,
) -> ConvTile:
    """The untuned tile: channel blocks × pixels as below, whole rows per parallel chunk as
    :func:`chunk_rows` gives for ``batch`` × the groups of channel blocks, and the pixel tile
    evened out over each chunk (:func:`balanced_pixels`).

    8-lane targets (AVX2, NEON; ``budget`` 12): as many channel blocks as divide ``oc_chunks``
    (4, else 6, 3, 2, 1) and the rest of the budget as consecutive pixels. Measured on Zen 2 (AVX2,
    1 thread) with ``benchmarks/conv_layers.py --sweep`` over ResNet-18's 3×3 shapes: 4 blocks × 3
    pixels reaches 46–50 G MAC/s (42.5 on the 7×7 layer, where per-row tiles reached 36.5); 2 × 6
    and 1 × 12 measured 27–40 (LLVM keeps more broadcasts live than there are registers).

    16-lane targets (AVX-512, 32 zmm registers): the tile's accumulators, its ``px`` broadcast
    inputs and its ``oc_tile`` weight vectors must fit the 32 registers together
    (:func:`register_pixels`: 2 × 10, else 3 × 7, else 1 × 15). Measured on Zen 5
    (``conv_layers.py --sweep``, 1 thread, G MAC/s): 2 × 10 reaches 132–136 on ResNet-18's 3×3
    layers (4 × 6: 112–134, 4 × 6 losing 15% on the 7×7 layer), 117–132 on ResNet-50's 1×1 layers
    (4 × 6: 116–133); tiles that break the rule spill: 2 × 12 runs at 79–91, 3 × 8 at 48–62
    (MobileNetV2's 144-channel expansion: 3 × 7 100, 3 × 8 48). Two kinds of conv take 2 ×
    :data:`SHORT_REDUCTION_PIXELS` instead:

    - convs that read at most one channel block (RGB stems, MobileNetV2's 16-channel expansion):
      on Zen 4 (``conv_layers.py --sweep``, 1 thread, ms) 2 × 8 / 2 × 10 ran ResNet's 7×7/2 stem
      2.19 / 2.32, MobileNetV2's 3×3/2 stem 0.255 / 0.277 and its 16 → 96 expansion at 112×112
      0.540 / 0.589; with 32 or more input channels 2 × 10 stayed as fast or faster (32 → 192 at
      28×28: 0.106 / 0.114);
    - strided convs wider than their stride (3×3/2): the tap ``kw = 2`` of one pixel reads the
      input column of tap 0 of the next, so LLVM keeps a tile's broadcasts live from the first
      kernel column to the third, which 2 × 10 does not have the registers for (the asm spills
      8 broadcasts per input channel). Zen 4, ``conv_layers.py --sweep``, 1 thread, G MAC/s,
      2 × 10 / 2 × 8: YOLOv5s's 128 → 256 at 40×40 43.0 / 50.2, 32 → 64 at 160×160 43.2 /
      54.3 (with the kernel columns outside the channel loop instead, which stops the sharing:
      46.6 / 54.3), ResNet-18's 64 → 128 at 56×56 50.4 / 55.0, 128 → 256 at 28×28 50.3 / 55.5.

    Channel blocks that neither 2 nor 3 divide but 5 does (80 or 400 channels) take 5 × 4 (20
    accumulators) where that leaves :data:`MIN_PARALLEL_CHUNKS` chunks (:func:`ragged_tile` on
    7×7 images), else the one-block tile. Emerald Rapids, 1 thread, kernel alone, µs, 5 × 4 /
    1 × 14: 64 → 80 1×1 at 56×56 181–188 / 198–211, 3×3/2 at 56×56 1,871–1,909 / 2,406–2,479,
    EfficientNet's 480 → 80 at 14×14 75–83 / 98–101 (4-pixel chunks, 49 of them: too few, so
    1 × 14 stays there) and RegNetX's 160 → 400 at 14×14 122–125 / 127–134.

    Where the pixel tile leaves a tail in the chunk, a slightly shorter one that divides it is
    taken (:func:`dividing_pixels`).
    """
    if lanes >= 16:
        oc_tile = next(t for t in (2, 3, 5, 1) if oc_chunks % t == 0)
    else:
        oc_tile = next(t for t in (4, 6, 3, 2, 1) if oc_chunks % t == 0 and t <= budget)
    shape = (oc_chunks, out_h, out_w, budget, in_channels, kernel_taps, lanes, batch, column_stride, kernel_w)
    tile = _tile_of(oc_tile, *shape)
    if oc_tile == 5 and parallel_chunks(tile, oc_chunks, out_h, out_w, batch) < MIN_PARALLEL_CHUNKS:
        return _tile_of(1, *shape)  # five blocks only where they keep enough chunks (:func:`ragged_tile`)
    return tile


def parallel_chunks(tile: ConvTile, oc_chunks: int, out_h: int, out_w: int, batch: int = 1) -> int:
    """The chunks of the parallel loop that ``tile`` gives a conv of this output shape."""
    per_image = -(-out_h * out_w // tile.chunk_pixels) if tile.chunk_pixels else out_h // tile.rows
    return batch * (oc_chunks // tile.oc_tile) * per_image


def _tile_of(oc_tile, oc_chunks, out_h, out_w, budget, in_channels, kernel_taps, lanes, batch, column_stride, kernel_w) -> ConvTile:
    """:func:`default_tile` with ``oc_tile`` channel blocks."""
    px = register_pixels(oc_tile, lanes, budget)
    short_reduction = 0 < in_channels <= lanes
    strided_window = 1 < column_stride < kernel_w
    if lanes >= 16 and oc_tile == 2 and (short_reduction or strided_window):
        px = SHORT_REDUCTION_PIXELS
    rows = chunk_rows(out_h, out_w, batch * (oc_chunks // oc_tile), px)
    px = balanced_pixels(max(1, min(px, rows * out_w)), rows * out_w)
    if lanes >= 16:
        px = dividing_pixels(px, rows * out_w)
    channels_outside = channels_outside_by_default(in_channels, kernel_taps, lanes)
    weight_bytes = oc_chunks * lanes * in_channels * kernel_taps * 4
    if batch * (oc_chunks // oc_tile) * (out_h // rows) < MIN_PARALLEL_CHUNKS and lanes >= 16 and weight_bytes <= SUB_ROW_MAX_WEIGHT_BYTES:
        finer = sub_row_tile(oc_chunks, oc_tile, px, out_h * out_w, batch)
        if finer is not None:
            return ConvTile(finer.oc_tile, finer.px, 1, channels_outside, finer.chunk_pixels)
    return ConvTile(oc_tile, px, rows, channels_outside)


MIN_SUB_ROW_PIXELS = 4  # 2 × 4 still keeps 8 accumulators (two FMA pipes × 4 cycles of latency)
MIN_SUB_ROW_PIXELS_ONE_BLOCK = 7


def sub_row_tile(oc_chunks: int, oc_tile: int, px: int, pixels: int, batch: int):
    """For convs whose one-row chunks leave fewer than :data:`MIN_PARALLEL_CHUNKS` (MobileNetV2's
    1×1 convs at 14×14 and 7×7: 28–35 chunks): chunks of whole register tiles in the flattened
    pixels of an image (the per-tile form computes the conv per tile, so a chunk need not be whole
    rows). Tries ``oc_tile`` with pixel tiles from ``px`` down to :data:`MIN_SUB_ROW_PIXELS`, then
    one chunk per full tile of at least :data:`MIN_RAGGED_ACCUMULATORS` accumulators, the last
    one partial (:func:`ragged_tile`), then one channel block with 15 down to
    :data:`MIN_SUB_ROW_PIXELS_ONE_BLOCK` (more chunks, each weight vector still used by 7 pixels);
    the first tile dividing the ``pixels`` that leaves enough chunks wins, with the largest chunk
    that does (up to :data:`MAX_CHUNK_PIXELS`). None where no such tile exists (the caller keeps
    whole rows)."""
    for tile_oc, most, least in ((oc_tile, px, MIN_SUB_ROW_PIXELS), (1, register_pixels(1, 16, 0), MIN_SUB_ROW_PIXELS_ONE_BLOCK)):
        if oc_chunks % tile_oc:
            continue
        groups = batch * (oc_chunks // tile_oc)
        for tile_px in range(most, least - 1, -1):
            if pixels % tile_px:
                continue
            tiles = pixels // tile_px
            enough = [k for k in range(1, tiles + 1) if tiles % k == 0 and groups * (tiles // k) >= MIN_PARALLEL_CHUNKS and k * tile_px <= MAX_CHUNK_PIXELS]
            if enough:
                return ConvTile(tile_oc, tile_px, 1, chunk_pixels=max(enough) * tile_px)
        if tile_oc > 1:
            ragged = ragged_tile(oc_chunks, tile_oc, px, pixels, batch)
            if ragged is not None:
                return ragged
    return None


MIN_RAGGED_ACCUMULATORS = 16


def ragged_tile(oc_chunks: int, oc_tile: int, px: int, pixels: int, batch: int):
    """One full ``oc_tile`` × ``px`` tile per parallel chunk of the flattened pixels, the last
    chunk holding what is left (its missing pixels masked), where that makes
    :data:`MIN_PARALLEL_CHUNKS` chunks and the tile keeps :data:`MIN_RAGGED_ACCUMULATORS`
    accumulators; else None. RegNetX's 400 → 400 1×1 convs at 7×7 (25 channel blocks, which only
    5 and 1 divide): 5 blocks × 4 pixels in 13 chunks per group (65) against one block × 7 pixels
    (175), 1 thread, kernel alone (Emerald Rapids, ``conv_layers.py``'s kernels): 78–84 against
    95–103 µs, onnxruntime's node 87–100 in the same runs; 2 blocks × 4 pixels in such chunks (8
    accumulators) ran MobileNetV2's 960 → 160 at 7×7 no faster than one block × 7 (97 against
    100 µs), so smaller tiles keep the one-block fallback."""
    chunks = batch * (oc_chunks // oc_tile) * -(-pixels // px)
    if oc_tile * px < MIN_RAGGED_ACCUMULATORS or chunks < MIN_PARALLEL_CHUNKS or pixels % px == 0:
        return None
    return ConvTile(oc_tile, px, 1, chunk_pixels=px)


def register_pixels(oc_tile: int, lanes: int, budget: int) -> int:
    """The most pixels a tile of ``oc_tile`` channel blocks holds in registers: on 16-lane
    targets ``oc_tile · px`` accumulators, ``px`` broadcast inputs and ``oc_tile`` weight vectors
    within the 32 zmm registers; elsewhere ``budget`` accumulators (:func:`accumulator_budget`)."""
    if lanes >= 16:
        return (REGISTERS_AVX512 - oc_tile) // (oc_tile + 1)
    return budget // oc_tile


def column_stride(sch: s_tir.Schedule, conv) -> int:
    """The conv's stride along output columns, read from its input access: the coefficient of
    the output-column iterator (the 4th) in the column index ``ow · stride + kw · dilation`` of
    TOPI's conv2d_NCHWc and the plain-input stem compute. 1 where the index has another form."""
    stmt = sch.get(conv)
    column = stmt.iter_vars[3].var
    found = [_coefficient(read.region[3].min, column) for read in stmt.reads if len(read.region) > 3]
    return max(found + [1])


def _coefficient(expr, var) -> int:
    """The integer coefficient of ``var`` in a sum of terms ``c · var`` or ``var``; 0 if absent."""
    if isinstance(expr, tvm.tirx.Add):
        return _coefficient(expr.a, var) + _coefficient(expr.b, var)
    if isinstance(expr, tvm.tirx.Var):
        return int(expr.same_as(var))
    if isinstance(expr, tvm.tirx.Mul):
        for term, factor in ((expr.a, expr.b), (expr.b, expr.a)):
            if isinstance(term, tvm.tirx.Var) and term.same_as(var) and isinstance(factor, tvm.tirx.IntImm):
                return int(factor.value)
    return 0


REGISTERS_AVX512 = 32
SHORT_REDUCTION_PIXELS = 8  # 2 × 8 tiles for convs reading ≤ one channel block or strided windows (default_tile)
DIVIDING_PIXELS_SLACK = 3
MIN_DIVIDING_PIXELS = 7


def dividing_pixels(px: int, chunk: int) -> int:
    """``px``, or where ``px`` leaves a tail tile in a ``chunk`` of pixels, the largest tile of up
    to :data:`DIVIDING_PIXELS_SLACK` fewer pixels (not below :data:`MIN_DIVIDING_PIXELS`) that
    divides the chunk: whole tiles let the epilogue run per tile (:func:`_epilogue_per_tile`)
    and leave no tail loop. 16-lane targets (``default_tile``); measured on Zen 4
    (``conv_layers.py --sweep``, 1 thread, ms, 2 × 10 with its tail against the dividing tile):
    ResNet-50's 64 → 256 1×1 at 56×56 (224-pixel chunks) 1.074 / 0.916 with 2 × 8, 256 → 64 0.925
    / 0.899, 128 → 512 at 28×28 (28-pixel chunks) 0.960 / 0.919 with 2 × 7, 512 → 128 0.992 /
    0.949, ResNet's 64 → 128 3×3/2 at 28×28 1.136 / 1.039."""
    if chunk % px == 0:
        return px
    fewer = range(px - 1, max(MIN_DIVIDING_PIXELS, px - DIVIDING_PIXELS_SLACK) - 1, -1)
    return next((p for p in fewer if chunk % p == 0), px)


def channels_outside_by_default(in_channels: int, kernel_taps: int, lanes: int = 8) -> bool:
    """Input channels outside the pixel tiles for kernels larger than 1×1 with ≥ 128 input
    channels, on 8-lane (AVX2, NEON) targets. Measured there (Zen 2, ``benchmarks/conv_layers.py``,
    1 thread): +9–16% on ResNet-18's 3×3 layers with 256 and 512 input channels (l3 44.8 → 49.6
    G MAC/s) and on the strided one with 128, neutral on the stride-1 one with 128, −2% with 64,
    and −25% on 1×1 kernels, where a tile's 12 accumulators would be reloaded every 96
    multiply-adds. On 16-lane AVX-512 targets (the 4 × 6 tile of 24 zmm accumulators) it loses on
    every ResNet-18 3×3 shape: Zen 5, ``conv_layers.py --sweep``, 1 thread, ms with / without:
    l4 1.459 / 1.020, l4 stride 2 0.681 / 0.464, l3 0.898 / 0.877, l2 0.902 / 0.881."""
    return lanes < 16 and kernel_taps > 1 and in_channels >= 128


SUB_ROW_MAX_WEIGHT_BYTES = 1024 * 1024  # heavier convs keep whole-row chunks (they took the weight-chunk form until session 45)
TILE_PREFETCH_MIN_WEIGHT_BYTES = 256 * 1024
TILE_PREFETCH_MAX_SHARES = 16
CACHE_LINE_BYTES = 64


def schedule_conv2d_nchwc(
    sch: s_tir.Schedule, oc_tile: int = 1, px: int = 1, rows: int = 1, channels_outside: bool = False, prefetch: bool = False, chunk_pixels: int = 0
) -> None:
    """Apply the module docstring's schedule to the fused PrimFunc in ``sch``.

    ``oc_tile`` must divide the output channel blocks and ``rows`` the output rows (ints: each
    MetaSchedule design space is one tile, see :func:`conv2d_design_spaces`). The pixel tile ``px`` may
    leave a tail; it becomes its own loop. ``prefetch`` (16-lane targets): the per-tile form
    prefetches the next channel group's weights where the module docstring's conditions hold.
    ``chunk_pixels`` (:func:`sub_row_tile`, a multiple of ``px``): chunks of that many flattened
    pixels instead of ``rows`` rows, the last one partial where they do not divide the image's
    pixels (:func:`ragged_tile`: its pixels past the image are masked); only in the per-tile form
    (refused with ``channels_outside``).
    """
    stages = split_stages(sch, CONV_BLOCK)
    conv, out = stages.main, stages.out
    batch, oc_chunks, out_h, out_w, oc_bn, in_channels, kernel_h, kernel_w = (int(sch.get(loop).extent) for loop in sch.get_loops(conv))
    input_bytes = 4 * math.prod(int(extent) for extent in sch.get(conv).reads[0].source.shape)
    weight_bytes = 4 * oc_chunks * oc_bn * in_channels * kernel_h * kernel_w
    regions = spatial_partition(out_h * out_w, weight_bytes, input_bytes + 4 * batch * oc_chunks * oc_bn * out_h * out_w, max_pixels=None)
    sch.transform_block_layout(conv, lambda n, oc, oh, ow, ob, ic, kh, kw: (n, oc, oh * out_w + ow, ob, ic, kh, kw))

    pixels = chunk_pixels or rows * out_w
    ic_bn = oc_bn  # blocked inputs use the output's channel block
    in_blocks = in_channels // ic_bn if in_channels % ic_bn == 0 else 1
    block_bytes = kernel_h * kernel_w * (in_channels // in_blocks) * oc_bn * 4
    if chunk_pixels and (channels_outside or pixels % px):
        raise ValueError(f"chunks of {chunk_pixels} pixels need the per-tile form (whole {px}-pixel tiles, channels inside)")
    if not channels_outside and pixels % px == 0:
        shares = -(-out_h * out_w // pixels)  # the chunks that read one group's weights in turn
        streamed = (
            prefetch
            and not regions
            and oc_chunks * in_blocks * block_bytes >= TILE_PREFETCH_MIN_WEIGHT_BYTES
            and shares <= TILE_PREFETCH_MAX_SHARES
            and oc_tile * block_bytes >= CACHE_LINE_BYTES * shares * (pixels // px)  # a line for every step to prefetch
        )
        tile_prefetch = (oc_tile, px, pixels, pixels // px, shares) if streamed else None
        _epilogue_per_tile(sch, conv, out, oc_tile, px, pixels, ic_bn, regions, tile_prefetch)
        schedule_padding(sch, stages.pads, regions)
        return

    n, oc_chunk, oh, ow, oc_block = sch.get_loops(out)
    oc_outer, oc_inner = sch.split(oc_chunk, [None, oc_tile])
    oh_outer, oh_inner = sch.split(oh, [None, rows])
    outer = (n, oh_outer, oc_outer) if regions else (n, oc_outer, oh_outer)
    sch.reorder(*outer, oc_inner, oh_inner, ow, oc_block)
    chunk = sch.fuse(*outer)
    sch.parallel(chunk)
    sch.vectorize(oc_block)
    sch.compute_at(conv, chunk, preserve_unit_loops=True)

    # Below the chunk: batch, oc_inner, pixel, oc_block, ic, kh, kw (unit loops are kept).
    tile_oc, pixel = sch.get_loops(conv)[-6:-4]
    sch.reorder(pixel, tile_oc)
    parts = sch.loop_partition(pixel, [pixels // px * px]) if pixels % px and pixels > px else [pixel]
    for part in parts:
        _tile_and_reduce(sch, sch.get_child_blocks(part)[0], ic_bn, px, channels_outside)
    schedule_padding(sch, stages.pads, regions)


def _epilogue_per_tile(sch, conv, out, oc_tile: int, px: int, chunk_pixels: int, ic_bn: int, regions: bool = False, tile_prefetch=None) -> None:
    """The chunk loop over whole register tiles (``px`` must divide the ``chunk_pixels``), the conv
    computed per tile and the epilogue run on that tile at once: LLVM keeps the accumulators in
    registers from the reduction through the epilogue, where per-chunk accumulators were stored,
    zeroed in memory first, and read back (see the module docstring). ``regions``: pixel chunks
    outside the channel groups in the parallel loop (:func:`~.stages.spatial_partition`).
    ``tile_prefetch``: the :data:`TILE_PREFETCH_ANNOTATION` for the tile's reduction loop, or None."""
    # Both the conv's result and the epilogue run over flattened pixels, so that a tile which
    # wraps from one row to the next reads exactly its pixels back (a bounding box of whole rows
    # otherwise).
    out_w = int(sch.get(sch.get_loops(out)[3]).extent)
    sch.transform_layout(conv, ("write", 0), lambda n, oc, oh, ow, ob: (n, oc, oh * out_w + ow, ob))
    sch.transform_block_layout(out, lambda n, oc, oh, ow, ob: (n, oc, oh * out_w + ow, ob))
    n, oc_chunk, pixel, oc_block = sch.get_loops(out)
    oc_outer, oc_inner = sch.split(oc_chunk, [None, oc_tile])
    pixel_chunk, tile, tile_pixel = sch.split(pixel, [None, chunk_pixels // px, px])
    outer = (n, pixel_chunk, oc_outer) if regions else (n, oc_outer, pixel_chunk)
    sch.reorder(*outer, tile, oc_inner, tile_pixel, oc_block)
    chunk = sch.fuse(*outer)
    sch.parallel(chunk)
    sch.unroll(oc_inner)
    sch.unroll(tile_pixel)
    sch.vectorize(oc_block)
    sch.compute_at(conv, tile, preserve_unit_loops=True)
    # Below the tile: batch, oc_inner, pixel, oc_block, ic, kh, kw (unit loops are kept).
    tile_oc, pixel = sch.get_loops(conv)[-6:-4]
    sch.reorder(pixel, tile_oc)
    _tile_and_reduce(sch, conv, ic_bn, px, channels_outside=False, tile_prefetch=tile_prefetch)


def _tile_and_reduce(sch, conv, ic_bn: int, px: int, channels_outside: bool, tile_prefetch=None) -> None:
    """Under one pixel loop: ``px``-pixel tiles (the tail: one tile of what is left), the reduction
    outside the unrolled tile, its input-channel chunks outside the tiles if ``channels_outside``.
    ``tile_prefetch`` (the :data:`TILE_PREFETCH_ANNOTATION`; one whole tile under the loop): the
    loop over input-channel blocks prefetches a share of the next group of channel blocks' weights."""
    pixel, tile_oc, vec, ic, kh, kw = sch.get_loops(conv)[-6:]
    # ic runs over every input channel; blocked inputs split it into chunks of one channel block
    # (a plain-input stem, whose channels are not a multiple of the block, is one chunk).
    if int(sch.get(ic).extent) % ic_bn:
        ic_bn = int(sch.get(ic).extent)
    ic_outer, ic_inner = sch.split(ic, [None, ic_bn])
    pixels = int(sch.get(pixel).extent)
    unrolled = [kw, tile_oc, pixel]
    if int(sch.get(pixel).min) == 0 and pixels > px:
        pixel_outer, pixel = sch.split(pixel, [None, px])
        unrolled[-1] = pixel
        if channels_outside:
            sch.reorder(ic_outer, pixel_outer, kh, ic_inner, kw, tile_oc, pixel, vec)
            unrolled.append(ic_inner)
        else:
            sch.reorder(pixel_outer, ic_outer, kh, ic_inner, kw, tile_oc, pixel, vec)
    else:
        sch.reorder(ic_outer, kh, ic_inner, kw, tile_oc, pixel, vec)
        if tile_prefetch is not None:
            sch.annotate(ic_outer, TILE_PREFETCH_ANNOTATION, list(tile_prefetch))
    for loop in unrolled:
        sch.unroll(loop)
    sch.vectorize(vec)
    sch.decompose_reduction(conv, ic_outer)


class Conv2dNCHWc(CPURule):
    """dlight rule: schedules any PrimFunc whose main block is TOPI's conv2d_NCHWc."""

    main_block = CONV_BLOCK

    def schedule_block(self, sch, block):
        batch, oc_chunks, out_h, out_w, _, in_channels, kernel_h, kernel_w = (int(sch.get(loop).extent) for loop in sch.get_loops(block))
        tile = default_tile(
            oc_chunks, out_h, out_w, accumulator_budget(self.lanes), in_channels, kernel_h * kernel_w, self.lanes, batch, column_stride(sch, block), kernel_w
        )
        schedule_conv2d_nchwc(sch, tile.oc_tile, tile.px, tile.rows, tile.channels_outside, prefetch=self.lanes >= 16, chunk_pixels=tile.chunk_pixels)
        return sch


MAX_ACCUMULATORS = 16  # the search may spill a little past the default budget; measuring decides


def conv2d_design_spaces(sch: s_tir.Schedule, lanes: int) -> list:
    """MetaSchedule design spaces: one per (channel blocks, pixels, loop order) tile, because the
    pixel tile decides where the loop is partitioned for its tail, which a replayed trace cannot
    recompute from a new decision. Only tiles that fill the accumulator budget or leave one
    accumulator free are offered (smaller ones never measured faster), with one channel block
    only when nothing else divides the channels: MetaSchedule replays every space's trace while
    it samples, and 48 spaces per conv made tuning the light zoo's DenseNet take minutes.
    16-lane targets: the pixels the 32 registers hold next to ``oc_tile`` accumulators per pixel
    (:func:`register_pixels`: 2 × 10, 4 × 5, ...), one fewer, the tile that divides the chunk
    (:func:`dividing_pixels`) and the untuned tile's pixels (:func:`default_tile`: 2 × 8 on strided
    3×3 convs), so that tuning can always find the untuned schedule. Channel blocks that none of
    2, 3, 4, 6, 8 divides but 5 does (400 or 80 channels on AVX-512) get five-block tiles in row
    chunks besides the one-block ones (the untuned tile may be five blocks in flattened chunks)."""
    conv = sch.get_sblock(CONV_BLOCK)
    loops = sch.get_loops(conv)
    batch, oc_chunks, out_h, out_w, _, in_channels, kernel_h, kernel_w = (int(sch.get(loop).extent) for loop in loops)
    budget = max(MAX_ACCUMULATORS, accumulator_budget(lanes))
    orders = (False, True) if kernel_h * kernel_w > 1 else (False,)
    # five blocks (and one) where nothing smaller divides, as the untuned tile takes them
    oc_tiles = [t for t in (2, 3, 4, 6, 8) if oc_chunks % t == 0] or [t for t in (5, 1) if oc_chunks % t == 0]
    untuned = default_tile(
        oc_chunks, out_h, out_w, accumulator_budget(lanes), in_channels, kernel_h * kernel_w, lanes, batch, column_stride(sch, conv), kernel_w
    )
    tiles = {(untuned.oc_tile, untuned.px, untuned.rows, untuned.chunk_pixels)}
    for oc_tile in oc_tiles:
        fitting = register_pixels(oc_tile, lanes, budget)
        rows = chunk_rows(out_h, out_w, batch * (oc_chunks // oc_tile), fitting)
        most = max(1, min(fitting, rows * out_w))
        choices = {most, max(1, most - 1)} | ({dividing_pixels(most, rows * out_w)} if lanes >= 16 else set())
        tiles |= {(oc_tile, px, rows, 0) for px in choices}
    spaces = []
    for oc_tile, px, rows, chunk_pixels in sorted(tiles):
        for channels_outside in orders if not chunk_pixels else (False,):
            space = sch.copy()
            schedule_conv2d_nchwc(space, oc_tile, px, rows, channels_outside, prefetch=lanes >= 16, chunk_pixels=chunk_pixels)
            spaces.append(space)
    return spaces
