"""Schedule of the packed binary conv (schedules/binary_grouped_conv_and_dense.py, ``binary_conv2d_packed``).

Stages: pack the input signs into bytes ``[N, row, col, channel byte]`` (parallel over rows;
absent when a producing binary conv wrote bits; packed within the copy into the zero border, one
parallel loop, but for NCHW input with rows of 16 pixels or more, packed along its rows first; on
x86 a channel-blocked input by a vector compare and move-mask per byte,
schedules/sign_pack_intrin.py) → per output row, the popcount nest →
the float epilogue (scale, padding correction and whatever element-wise ops were fused after it,
written in NCHW or NCHW[b]c), or, for bit output, the thresholds (on x86 each row's bytes by
vector compares right after its dots) and OR-pool writing the next conv's packed input.

The popcount nest keeps a register tile of ``reg_n`` output pixels × ``oc_vectors`` vectors of
32 output channels (64 on AVX-512: one zmm of ``vpopcntb``). For every tap and every chunk of up to 16 channel bytes (or for a whole
kernel row when its bytes fit: ≤ 31) it sums byte popcounts of ``activation byte XOR weight
bytes`` in 8-bit lanes (no overflow: at most 31 · 8 = 248), then widens that sum into the 16-bit
(or 32-bit) counts. The activation byte is
broadcast; the 32 weight bytes are one vector load. On AVX2 LLVM emits the ``vpshufb`` nibble
popcount for the byte lanes; on NEON, ``cnt``. Output rows run in parallel, and with a blocked
float output also groups of output channels, so that 7×7 and 14×14 layers offer more than 7 or
14 chunks (Bi-Real Net 18 on Zen 4, benchmarks/compare_builds.py, 60 runs: 6.18 → 6.09 ms at 1
thread, 3.07 → 2.99 ms at 2).
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir

from .binary_conv_compute import (
    CHANNEL_LANES,
    DOTS_BY_CHANNEL_BLOCK,
    PACKED_CONV_BLOCK,
    PACKED_DOT_BLOCK,
    PACKED_IMAGE_BLOCK,
    PACKED_PARTIAL_BLOCK,
    PACKED_PLANES_BLOCK,
    PACKED_ROWS_BLOCK,
    POPCOUNT_TABLE_BLOCK,
    SIGN_BITS_BLOCK,
    SIGN_BYTES_BLOCK,
)
from .cpu_rule import CPURule
from .sign_pack_intrin import sign_pack_intrin, threshold_pack_intrin
from .stages import MIN_PARALLEL_CHUNKS, categorical, fewest_parts, find_block
from .transpose_intrin import TILE_ROWS, transpose_intrin


@dataclass(frozen=True)
class BinaryConvTile:
    """``reg_n`` output pixels × ``oc_vectors`` vectors of 32 (or 64, :func:`vector_bytes`) output channels."""

    reg_n: int
    oc_vectors: int


def vector_bytes(lanes: int, padded_out: int, popcount_table: bool) -> int:
    """Output channels per popcount vector: 64 (one zmm of ``vpopcntb``) on 16-lane (AVX-512)
    targets when the padded output channels are a multiple of 64, else 32 (the AVX2 table form
    needs exactly 32; NEON splits either into 16-byte registers). Measured on Zen 5, ResNet-18's
    3×3 layers, 1 thread (benchmarks/binary_layers.py): 64-byte vectors at 4 pixels × 2 vectors
    took l1 0.166 → 0.127 ms, l2 0.145 → 0.104, l3 0.147 → 0.103, l4 0.146 → 0.089, the stride-2
    layers 0.099–0.106 → 0.068–0.089 (their input packing stays)."""
    return 64 if lanes == 16 and not popcount_table and padded_out % 64 == 0 else CHANNEL_LANES


def default_binary_tile(out_w: int, padded_out: int, popcount_table: bool = False, width: int = CHANNEL_LANES) -> BinaryConvTile:
    """64-byte vectors (:func:`vector_bytes`): 4 pixels × 2 vectors when the channels allow, else
    × 1 (on Zen 5, 2–8 pixels × 1–2 vectors were within 5% on the stride-1 layers; 4 × 2 or 8 × 1
    led on the 7×7 and stride-2 ones).

    32-byte byte popcounts (NEON ``cnt``): 2 vectors × 2 pixels when the
    channels allow, else 1 vector × 4 pixels (on this machine's AVX2 core, before the table form,
    tiles of 1–8 pixels × 1–2 vectors were within 5% of each other).

    AVX2 table popcounts: 2 vectors (when the channels allow) × 4 pixels, or × the whole row
    when it is at most 8 pixels. Measured on ResNet-18's 3×3 shapes (whole kernel, 1 thread,
    against 2 pixels × 2 vectors): 0.319 / 0.329 ms at 56×56×64, 0.304 / 0.337 at 28×28×128,
    0.305 / 0.314 at 14×14×256 (best there: 2 pixels × 4 vectors, 0.293), and 7 pixels at
    7×7×512: 0.314 against 0.382 ms for 4. Tiles of 8 pixels on wide rows ran 20–50% slower.
    ``slimtvm tune`` searches them per layer."""
    vectors = padded_out // width
    if width == 64:
        return BinaryConvTile(min(4, out_w), 2 if vectors % 2 == 0 else 1)
    if popcount_table:
        return BinaryConvTile(out_w if out_w <= 8 else 4, 2 if vectors % 2 == 0 else 1)
    if vectors % 2 == 0:
        return BinaryConvTile(min(2, out_w), 2)
    return BinaryConvTile(min(4, out_w), 1)


def schedule_binary_conv(sch: s_tir.Schedule, reg_n=2, oc_vectors=2, vector_bytes=CHANNEL_LANES, group_channels=None, lanes: int = 4) -> None:
    """Apply the module docstring's schedule; the factors are ints or MetaSchedule variables.
    ``lanes``: the target's fp32 lanes (8 or 16: x86 AVX, whose compare and move-mask pack a
    channel-blocked input's signs; 4: the select form).
    ``vector_bytes``: output channels per vector (32; 64 for zmm byte popcounts on AVX-512).
    ``group_channels``: the parallel channel groups are a whole number of these (default: the
    tile, ``oc_vectors · vector_bytes``; a design space, whose ``oc_vectors`` is sampled, gives
    the largest tile it may sample, so that every sample divides the groups)."""
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    names = [sch.get(block).name_hint for block in blocks]
    partial, counts, dots = (blocks[names.index(name)] for name in (PACKED_PARTIAL_BLOCK, PACKED_CONV_BLOCK, PACKED_DOT_BLOCK))
    packed = blocks[names.index(PACKED_ROWS_BLOCK)] if PACKED_ROWS_BLOCK in names else None  # absent: bits come packed
    by_channel = blocks[names.index(DOTS_BY_CHANNEL_BLOCK)] if DOTS_BY_CHANNEL_BLOCK in names else None
    epilogue = blocks[names.index(DOTS_BY_CHANNEL_BLOCK if by_channel is not None else PACKED_DOT_BLOCK) + 1 :]
    sign_bytes = blocks[names.index(SIGN_BYTES_BLOCK)] if SIGN_BYTES_BLOCK in names and lanes >= 8 else None
    for block in epilogue[:-1]:
        if block != sign_bytes:
            sch.compute_inline(block)
    out = epilogue[-1]

    if SIGN_BITS_BLOCK in names or SIGN_BYTES_BLOCK in names:  # bits out: dots rows in parallel, then the small bit stage
        n, row, col, byte = sch.get_loops(out)
        sch.parallel(sch.fuse(n, row))
        n, row = sch.get_loops(dots)[:2]
        dots_row = sch.fuse(n, row)
        sch.parallel(dots_row)
        if sign_bytes is not None:  # x86: each row's bytes right after its dots, a compare and a move-mask per byte
            sch.reverse_compute_at(sign_bytes, dots_row, preserve_unit_loops=True)
            byte = sch.get_loops(sign_bytes)[-1]
            dot_dtype = str(sch.get(dots).writes[0].source.dtype)
            sch.tensorize(byte, threshold_pack_intrin(int(sch.get(byte).extent) * 8, dot_dtype))
    else:
        if group_channels is None and isinstance(oc_vectors, int):
            group_channels = oc_vectors * vector_bytes
        row = _schedule_float_out(sch, out, group_channels if by_channel is None else None, reg_n if isinstance(reg_n, int) else None)
        tile = _transpose_tile(sch, by_channel) if by_channel is not None else None
        if by_channel is not None and tile is None:
            sch.compute_inline(by_channel)  # the float epilogue gathers from the dots directly
        elif by_channel is not None:
            sch.compute_at(by_channel, row, preserve_unit_loops=True)
        sch.compute_at(dots, row, preserve_unit_loops=True)
        if tile is not None:  # after dots' compute_at, which cannot see into a tensorized block
            _transpose_in_tiles(sch, by_channel, tile)

    # dots under the output row: n, y (unit), x, o — tiled; counts computed per tile.
    x, o = sch.get_loops(dots)[-2:]
    x_outer, x_inner = sch.split(x, [None, reg_n])
    o_outer, o_tile, o_lane = sch.split(o, [None, oc_vectors, vector_bytes])
    sch.reorder(o_outer, x_outer, x_inner, o_tile, o_lane)
    sch.unroll(x_inner)
    sch.unroll(o_tile)
    sch.vectorize(o_lane)
    sch.compute_at(counts, x_outer, preserve_unit_loops=True)

    # counts under the tile: n, y, x, o (the tile), ry, group
    c_x, c_o, ry, group = sch.get_loops(counts)[-4:]
    c_tile, c_lane = sch.split(c_o, [None, vector_bytes])
    sch.reorder(ry, group, c_x, c_tile, c_lane)
    sch.compute_at(partial, group, preserve_unit_loops=True)
    # partial under the group: n, y, x, ry, group (units but the tile's x and o), o, then its
    # reduction: byte, or kernel column and byte
    loops = sch.get_loops(partial)
    reductions = 2 if len(sch.get(partial).iter_vars) == 8 else 1
    p_x, p_o = loops[-(reductions + 4)], loops[-(reductions + 1)]
    sch.reorder(*loops[-reductions:], p_x, p_o)
    p_tile, p_lane = sch.split(p_o, [None, vector_bytes])
    sch.unroll(p_x)
    sch.unroll(p_tile)
    sch.vectorize(p_lane)
    sch.decompose_reduction(partial, loops[-reductions])
    sch.unroll(c_x)
    sch.unroll(c_tile)
    sch.vectorize(c_lane)
    sch.decompose_reduction(counts, ry)

    if POPCOUNT_TABLE_BLOCK in names:  # 16 KB per call: 0.5 µs
        sch.vectorize(sch.get_loops(blocks[names.index(POPCOUNT_TABLE_BLOCK)])[-1])
    if "unipolar_ones" in names:  # per-pixel popcount of the activation planes (k-bit input)
        ones = blocks[names.index("unipolar_ones")]
        n, row = sch.get_loops(ones)[:2]
        sch.parallel(sch.fuse(n, row))
    planes = blocks[names.index(PACKED_PLANES_BLOCK)] if PACKED_PLANES_BLOCK in names else None
    if planes is not None and _planes_transpose(sch, planes):
        _pack_by_planes(sch, planes, blocks[names.index(PACKED_IMAGE_BLOCK)])
    elif PACKED_IMAGE_BLOCK in names:  # the image's bytes before the zero border: rows in parallel
        if planes is not None:
            sch.compute_inline(planes)
        image = blocks[names.index(PACKED_IMAGE_BLOCK)]
        loops = sch.get_loops(image)
        b, row_i, col_i, byte_i = loops[:4]
        plain_input = len(sch.get(image).reads[0].region) == 4  # NCHW, not NCHW[b]c
        if plain_input and len(loops) == 4 and int(sch.get(col_i).extent) >= 16:
            # NCHW rows are contiguous: vectorize along them. Short rows (14, 7) and blocked
            # NCHW8c input are left to LLVM's SLP vectorizer (8 channel compares per byte),
            # measured faster there (benchmarks/binary_layers.py).
            sch.parallel(sch.fuse(b, row_i))
            sch.reorder(byte_i, col_i)
            sch.vectorize(col_i)
        else:  # NCHW[b]c: on x86 a channel block at a time (its bytes innermost), a compare and a move-mask per byte
            _pack_within_border_copy(sch, image, packed, tensorize=len(loops) == 5 and lanes >= 8)
            packed = None
    if packed is not None:
        b, row_p, col_p, byte = sch.get_loops(packed)
        if PACKED_IMAGE_BLOCK in names:  # a copy into the zero border: a pixel's bytes at a time
            sch.parallel(_rows_or_pixels(sch, b, row_p, col_p, byte))
            sch.vectorize(sch.get_loops(packed)[-1])
        else:
            sch.parallel(sch.fuse(b, row_p))
            sch.reorder(byte, col_p)
            sch.vectorize(col_p)


def _rows_or_pixels(sch, batch, row, col, byte):
    """The parallel loop of a packing stage (pixels and bytes independent): its image rows, or
    where they are fewer than :data:`MIN_PARALLEL_CHUNKS` (7 to 58 on Bi-Real Net 18) rows × the
    fewest equal column ranges that make enough, and where whole pixels do not (7×7), pixels ×
    two halves of each pixel's bytes. Column ranges, not single pixels: one parallel loop over
    every pixel ran Bi-Real Net 18 3% slower at 1 thread (Zen 4; the border test of the copy
    into the padded buffer is then evaluated per pixel from a divided index)."""
    rows, cols = int(sch.get(batch).extent) * int(sch.get(row).extent), int(sch.get(col).extent)
    if rows >= MIN_PARALLEL_CHUNKS:
        return sch.fuse(batch, row)
    parts = fewest_parts(cols, rows)
    col_range, col_rest = sch.split(col, [parts, None])
    if rows * parts >= MIN_PARALLEL_CHUNKS or int(sch.get(byte).extent) % 2:
        return sch.fuse(batch, row, col_range)
    half, _ = sch.split(byte, [2, None])
    sch.reorder(half, col_rest)
    return sch.fuse(batch, row, col_range, half)


def _pack_within_border_copy(sch, image, padded, tensorize: bool) -> None:
    """The packed buffer is zeroed first (a serial memset: 5–27 KB on Bi-Real Net 18), then each
    chunk of the copy's parallel loop packs its pixels (with ``tensorize``, channel blocks by a
    compare and a move-mask per byte, sign_pack_intrin.py) and copies them into the interior.
    One parallel region where the packing and the copy into the zero border were two: Bi-Real Net
    18's binary convs ran 3–7% faster at 2 threads (per kernel, builds in turns; the 7×7 ones
    29.4 → 28.2 µs), the same at 1 thread; the whole model 0.89 → 0.86 ms at 2 threads, QuickNet
    0.94 → 0.89 (Zen 5, benchmarks/compare_builds.py). Decomposing the padding first leaves the
    copy without border tests, so the packing computed under it needs no predicate (which
    tensorize refuses)."""
    if sch.can_decompose_padding(padded, sch.get_loops(padded)[0]):  # not when nothing is padded
        fill = sch.decompose_padding(padded, sch.get_loops(padded)[0])
        sch.vectorize(sch.get_loops(fill)[-1])
    parallel = _rows_or_pixels(sch, *sch.get_loops(padded))
    sch.parallel(parallel)
    sch.vectorize(sch.get_loops(padded)[-1])
    sch.compute_at(image, parallel, preserve_unit_loops=True)
    if tensorize:
        byte = sch.get_loops(image)[-1]
        sch.tensorize(byte, sign_pack_intrin(int(sch.get(byte).extent) * 8))


def _planes_transpose(sch, planes) -> bool:
    """Whether NCHW sign bytes can go through 8 × 8 transposes: rows a multiple of 8 pixels and
    channel bytes a multiple of 8. Otherwise they are packed pixel-major directly."""
    channel_bytes, width = (int(sch.get(loop).extent) for loop in sch.get_loops(planes)[-2:])
    return width % TILE_ROWS == 0 and channel_bytes % 8 == 0


def _pack_by_planes(sch, planes, image) -> None:
    """NCHW input: sign bytes along each row (vectorized: contiguous floats in, contiguous bytes
    out), then transposed to pixel-major bytes in 8 × 8 register tiles."""
    b, row, _, col = sch.get_loops(planes)
    sch.parallel(sch.fuse(b, row))
    sch.vectorize(col)
    b, row_i, col_i, byte_i = sch.get_loops(image)
    sch.parallel(sch.fuse(b, row_i))
    col_outer, col_inner = sch.split(col_i, [None, TILE_ROWS])
    byte_outer, byte_inner = sch.split(byte_i, [None, 8])
    sch.reorder(col_outer, byte_outer, col_inner, byte_inner)
    sch.tensorize(col_inner, transpose_intrin(8, "uint8"))


def _transpose_tile(sch, by_channel) -> int | None:
    """Pixels per transpose tile for the dots' rows (8 or 4, dividing the row), or None: rows
    of other widths (14, 7) are gathered by the float epilogue, measured faster there."""
    channels, width = (int(sch.get(loop).extent) for loop in sch.get_loops(by_channel)[-2:])
    if channels % TILE_ROWS:
        return None
    return next((cols for cols in (8, 4) if width % cols == 0), None)


def _transpose_in_tiles(sch, by_channel, cols: int) -> None:
    """A row's dots ``[pixel, channel]`` → ``[channel, pixel]`` in 8-channel × ``cols``-pixel
    register tiles (schedules/transpose_intrin.py)."""
    channel, pixel = sch.get_loops(by_channel)[-2:]
    channel_outer, channel_inner = sch.split(channel, [None, TILE_ROWS])
    pixel_outer, pixel_inner = sch.split(pixel, [None, cols])
    sch.reorder(channel_outer, pixel_outer, channel_inner, pixel_inner)
    dtype = str(sch.get(by_channel).writes[0].source.dtype)
    sch.tensorize(channel_inner, transpose_intrin(cols, dtype))


def _schedule_float_out(sch, out, tile_channels: int | None = None, reg_n: int | None = None):
    """Parallel over output rows; in the blocked layout also over groups of output channels (a
    whole number of the popcount tile's ``tile_channels``), the fewest groups that give
    :data:`MIN_PARALLEL_CHUNKS` chunks with the rows (7×7 and 14×14 layers had 7 and 14 chunks),
    and where even the most groups do not, over the row's ``reg_n``-pixel tiles too. A 7×7 layer
    of 512 channels (AVX-512, 4 pixels × 2 vectors of 64 channels) gets 7 rows × 4 groups × 2
    tiles (4 and 3 pixels) = 56 chunks: one vector per tile, which would give 112, ran that layer
    about 25% slower at 1 thread (Bi-Real Net 18 on Zen 4, ``benchmarks/profile_kernels.py``,
    0.52 → 0.66 ms), while the pixel tiles in the parallel loop measured neutral. On Zen 5
    (session 30, per kernel, builds in turns, 1 thread): 4 × 1 (112 chunks) 51.4 → 56.2 µs,
    2 × 2 (112) 49 → 64 µs, 7 × 1 (56) 51.3 → 52.6 µs; at 16 threads 112 chunks of the 4 × 1
    tile would take 7 rounds of 0.55 of today's chunk, about 4% less than 56 chunks' 4 rounds.
    Session 48 (Zen 4) tried the same 4-pixel tile as 2 × 2 pixels (4 × 4 tiles × 4 groups = 64
    chunks, groups outermost so that 2 and 4 threads split them evenly): the 7×7 layer alone
    (packing and epilogue included, both builds in turns in one process) 5.5% slower at 1 and
    6% at 2 threads, the stride-2 14 → 7 one 3.5% and 5% (its edge tiles of 2 and 1 pixels and a
    two-sided bounds test per pixel). Not kept.
    Returns the parallel loop, under which the popcounts are computed."""
    loops = sch.get_loops(out)
    if len(loops) == 5:  # NCHW[b]c: a row's channel blocks, each pixel's block one vector
        n, chunk, row, col, lane = loops
        blocks, block = int(sch.get(chunk).extent), int(sch.get(lane).extent)
        rows = int(sch.get(n).extent) * int(sch.get(row).extent)
        groups = 1
        if tile_channels and tile_channels % block == 0 and blocks % (tile_channels // block) == 0:
            most = blocks // (tile_channels // block)
            groups = fewest_parts(most, rows)
        width = int(sch.get(col).extent)
        if rows * groups < MIN_PARALLEL_CHUNKS and reg_n and width > reg_n:
            group, chunk = sch.split(chunk, [groups, None])
            col_tile, col = sch.split(col, [None, reg_n])
            sch.reorder(n, row, group, col_tile, chunk, col, lane)
            parallel = sch.fuse(n, row, group, col_tile)
        elif groups > 1:
            group, chunk = sch.split(chunk, [groups, None])
            sch.reorder(n, row, group, chunk, col, lane)
            parallel = sch.fuse(n, row, group)
        else:
            sch.reorder(n, row, chunk, col, lane)
            parallel = sch.fuse(n, row)
        sch.parallel(parallel)
        sch.vectorize(lane)
        return parallel
    else:  # NCHW: a row per channel, vectorized along rows of 16 or more
        n, channel, row, col = loops
        sch.reorder(n, row, channel, col)
        parallel = sch.fuse(n, row)
        sch.parallel(parallel)
        if int(sch.get(col).extent) >= 16:  # short rows (14, 7): left to SLP, as for the packing
            sch.vectorize(col)
        return parallel


class BinaryConv(CPURule):
    """dlight rule: schedules any PrimFunc whose main block is the packed binary conv."""

    main_block = PACKED_CONV_BLOCK

    def schedule_block(self, sch, block):
        _, _, out_w, padded_out = (int(sch.get(loop).extent) for loop in sch.get_loops(block)[:4])
        table = find_block(sch, POPCOUNT_TABLE_BLOCK) is not None
        width = vector_bytes(self.lanes, padded_out, table)
        tile = default_binary_tile(out_w, padded_out, table, width)
        schedule_binary_conv(sch, tile.reg_n, tile.oc_vectors, width, lanes=self.lanes)
        return sch


def binary_conv_design_spaces(sch: s_tir.Schedule, lanes: int) -> list:
    """One MetaSchedule design space: the default schedule with sampled pixel and channel-vector
    tiles (the popcount form, byte or table, is fixed by the weights the lowering packed; the
    vector width by :func:`vector_bytes`)."""
    loops = sch.get_loops(sch.get_sblock(PACKED_CONV_BLOCK))
    out_w, padded_out = int(sch.get(loops[2]).extent), int(sch.get(loops[3]).extent)
    width = vector_bytes(lanes, padded_out, find_block(sch, POPCOUNT_TABLE_BLOCK) is not None)
    vectors = padded_out // width
    space = sch.copy()
    reg_n = categorical(space, [w for w in (1, 2, 3, 4, 7, 8) if w <= out_w])
    choices = [v for v in (1, 2, 4) if vectors % v == 0]
    oc_vectors = categorical(space, choices)
    schedule_binary_conv(space, reg_n, oc_vectors, width, group_channels=max(choices) * width, lanes=lanes)
    return [space]
