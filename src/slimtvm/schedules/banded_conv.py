"""fp32 conv in NCHW[x]c whose weights are zero outside a band of input channels per group of
output blocks: a grouped conv whose groups do not fill whole channel blocks (ShuffleNet v1's 1×1
convs: 4 groups of 34, 68 or 136 channels) or are too many to run one conv each (ResNeXt's 3×3
convs: 32 groups of 4 to 32 channels), made one dense conv with block-diagonal weights
(lowering/split_grouped_convs.py). Any kernel size, stride, padding and dilation: the zero
padding is a stage of its own, as in the direct kernel.

Each tile of ``oc_tile`` output blocks reduces over the input channels its weights touch, from
``starts[t]`` for ``counts[t]`` channels (``reach`` = the most), and skips the rest: for 4 groups
of 34 channels in 16-channel blocks, 442 of 9 × 136 (34 for a block within one group, 68 for one
across two), 1.08× a grouped conv's multiply-adds. Split into one conv per group instead, each
group's channels had to be a plain NCHW slice and its output copied back into place
(``channel_relayout`` kernels, slices and a concat: a third of ShuffleNet v1's time). The
weights are stored per tile, ``[tile, reach, oc_tile, output lane]`` (zero past a tile's count),
so each step of the reduction broadcasts one input value per pixel against one contiguous
vector per output block, as the direct kernel's (conv2d_nchwc.py). The input is NCHW[x]c, or
plain NCHW where its channels are not whole blocks (a ShuffleNet stage's 136-channel trunk).

Stages: the conv (:data:`BANDED_BLOCK`) computed per register tile (``oc_tile`` blocks × rows ×
columns of pixels) inside the loops of the fused epilogue's last stage (bias, residual add,
activation; :func:`stages.split_stages`). TE cannot give a reduction an extent that depends on
the output block, so the compute reduces over ``reach`` and the scheduled loop is annotated with
the counts, which lowering/banded_trip_counts.py puts in place: measured on Zen 5 (ShuffleNet v1,
1 thread), the 272-channel convs at 14×14 62 → 37 µs, the whole model 2.90 → 2.19 ms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm import s_tir, te, tirx

from ..conv_geometry import ConvGeometry
from .cpu_rule import CPURule
from .stages import OUT_EWISE_FUSABLE, categorical, max_accumulators, schedule_padding, split_stages, zero_padded

BANDED_BLOCK = "banded_conv2d"
TRIP_COUNTS_ANNOTATION = "slimtvm.banded_trip_counts"  # read by lowering/banded_trip_counts.py


@dataclass(frozen=True)
class BandedShape:
    """A conv of ``in_blocks`` → ``out_blocks`` channel blocks of ``block`` on ``batch`` images,
    of ``geometry`` (input size, kernel, strides, padding, dilation); tile ``t`` (``oc_tile``
    output blocks) reads input channels ``starts[t]`` … ``starts[t] + counts[t] − 1``."""

    batch: int
    in_blocks: int
    out_blocks: int
    geometry: ConvGeometry
    block: int
    oc_tile: int
    starts: tuple
    counts: tuple
    plain_channels: int = 0  # a plain NCHW input of this many channels (0: NCHW[x]c), read as ``in_blocks`` blocks

    @property
    def height(self) -> int:
        """Output rows."""
        return self.geometry.out_h

    @property
    def width(self) -> int:
        """Output columns."""
        return self.geometry.out_w

    @property
    def tiles(self) -> int:
        return self.out_blocks // self.oc_tile

    @property
    def reach(self) -> int:
        return max(max(self.counts), 1)

    @property
    def channels(self) -> int:
        """Input channels (a blocked input's padding included)."""
        return self.plain_channels or self.in_blocks * self.block

    @property
    def weight_shape(self) -> tuple:
        """``[tile, reach, kernel rows, kernel columns, oc_tile, output lane]``."""
        return (self.tiles, self.reach, self.geometry.kernel_h, self.geometry.kernel_w, self.oc_tile, self.block)

    @property
    def multiply_add_fraction(self) -> float:
        """The banded multiply-adds over a dense conv's."""
        return sum(self.counts) / (self.tiles * self.channels)


def weight_band(weight: np.ndarray, block: int, oc_tile: int) -> tuple:
    """``(starts, counts)`` of an OIHW ``weight``: for each tile of ``oc_tile`` output blocks,
    the first input channel with a nonzero weight (any tap) in the tile's rows and how many
    channels through the last one (0 and 0 for a tile of zeros). Refuses output channels that are
    not whole tiles."""
    out_channels, channels = weight.shape[:2]
    if out_channels % (block * oc_tile):
        raise ValueError(f"a banded conv needs whole tiles of {oc_tile} × {block} output channels, got {weight.shape}")
    magnitude = np.abs(weight).reshape(out_channels, channels, -1).max(axis=2)
    nonzero = magnitude.reshape(out_channels // (block * oc_tile), block * oc_tile, channels).max(axis=1) != 0
    starts, counts = [], []
    for used in nonzero:
        found = np.flatnonzero(used)
        starts.append(int(found[0]) if found.size else 0)
        counts.append(int(found[-1] - found[0] + 1) if found.size else 0)
    return tuple(starts), tuple(counts)


def banded_weights(weight: np.ndarray, shape: BandedShape) -> np.ndarray:
    """OIHW ``weight`` in :attr:`BandedShape.weight_shape`, zero past each tile's count."""
    b, k = shape.block, shape.oc_tile
    kh, kw = weight.shape[2:]
    banded = np.zeros(shape.weight_shape, dtype=np.float32)
    for tile, (start, count) in enumerate(zip(shape.starts, shape.counts)):
        rows = weight[tile * k * b : (tile + 1) * k * b, start : start + count]  # [k·b, count, kh, kw]
        banded[tile, :count] = rows.reshape(k, b, count, kh, kw).transpose(2, 3, 4, 0, 1)
    return banded


def select_table(values: tuple, index, dtype: str = "int64"):
    """``values[index]`` for a loop variable ``index``: a constant when all are equal, else a
    select chain (invariant in the loops inside the tile's, where LLVM hoists it)."""
    if len(set(values)) == 1:
        return tirx.const(values[0], dtype)
    chosen = tirx.const(values[-1], dtype)
    for i in range(len(values) - 2, -1, -1):
        chosen = tirx.Select(index == i, tirx.const(values[i], dtype), chosen)
    return chosen


def banded_conv2d_nchwc(data, weights, shape: BandedShape):
    """TE compute (module docstring): ``data`` ``[N, I/x, H, W, x]``, ``weights`` in
    :attr:`BandedShape.weight_shape`; returns the NCHW[x]c output."""
    s, geometry = shape, shape.geometry
    padded = zero_padded(data, geometry)
    step = te.reduce_axis(_i64(0, s.reach), name="ic")
    ky = te.reduce_axis(_i64(0, geometry.kernel_h), name="ky")
    kx = te.reduce_axis(_i64(0, geometry.kernel_w), name="kx")

    def conv(n, oc, y, x, lane):
        tile = oc // s.oc_tile
        channel = tirx.min(select_table(s.starts, tile) + step, s.channels - 1)
        row, col = geometry.padded_row(y, ky), geometry.padded_col(x, kx)
        source = padded[n, channel, row, col] if s.plain_channels else padded[n, channel // s.block, row, col, channel % s.block]
        value = source * weights[tile, step, ky, kx, oc % s.oc_tile, lane]
        return te.sum(value, axis=[step, ky, kx])

    attrs = {TRIP_COUNTS_ANNOTATION: [s.oc_tile, *s.counts]}  # read by schedule_banded
    return te.compute(_i64(s.batch, s.out_blocks, s.height, s.width, s.block), conv, name=BANDED_BLOCK, attrs=attrs)


def _i64(*dims) -> tuple:
    """Dims as int64, as Relax's shapes are (FuseTIR matches buffers to Relax tensors by type)."""
    return tuple(tirx.IntImm("int64", d) for d in dims)


def banded_conv2d_primfunc(shape: BandedShape):
    """The PrimFunc ``(x, weights, out)`` of :func:`banded_conv2d_nchwc`, marked out-element-wise
    fusable (the bias, residual add and activation after it fuse into it)."""
    s = shape
    height, width = s.geometry.height, s.geometry.width
    if s.plain_channels:
        data = te.placeholder(_i64(s.batch, s.plain_channels, height, width), "float32", name="data")
    else:
        data = te.placeholder(_i64(s.batch, s.in_blocks, height, width, s.block), "float32", name="data")
    weights = te.placeholder(_i64(*s.weight_shape), "float32", name="banded_weights")
    out = banded_conv2d_nchwc(data, weights, s)
    return te.create_prim_func([data, weights, out]).with_attr("op_pattern", OUT_EWISE_FUSABLE).without_attr("global_symbol")


def banded_accumulators(lanes: int) -> int:
    """The accumulators of a banded tile: 14 on 16-lane targets, half of what the register file
    holds (:func:`~.stages.max_accumulators`), and all 12 on AVX2. Tuning ShuffleNet v1 on Zen 5
    (150 trials) chose tiles of 7 to 14 accumulators for every banded conv, each about twice as
    fast alone as the 28-accumulator default (a 28×28 conv of 136 channels 0.162 → 0.049 ms);
    with 14 the untuned model ran as fast as the tuned one (``compare_builds.py``, 1 / 2 threads:
    1.72 / 0.98 → 1.62 / 0.94 ms; 10 accumulators 1.70 / 0.97), ResNeXt-50 36.85 / 19.05 →
    35.68 / 18.23 ms. The AVX2 build ran the same with 12 and 8, and 1.8× slower with 6."""
    return max_accumulators(lanes) // 2 if lanes >= 16 else max_accumulators(lanes)


def pixel_tile(height: int, width: int, oc_tile: int, lanes: int) -> tuple:
    """``(rows, columns)`` of the register tile: whole rows where they fit the accumulators
    (:func:`banded_accumulators`; the most rows that divide ``height``), else the most columns
    that divide ``width``."""
    budget = banded_accumulators(lanes) // oc_tile
    if width <= budget:
        return max(d for d in range(1, height + 1) if height % d == 0 and d * width <= budget), width
    return 1, max(d for d in range(1, budget + 1) if width % d == 0)


def schedule_banded(sch: s_tir.Schedule, lanes: int, rows=None, cols=None) -> None:
    """Parallel over images × tiles × pixel tiles (``rows`` × ``cols``: ints or sampled decisions
    that divide the output's height and width; :func:`pixel_tile` by default); each parallel step
    computes one register tile: the reduction's band outermost, then the ``oc_tile`` blocks ×
    pixels unrolled, lanes vectorized; the epilogue writes the tile."""
    stages = split_stages(sch, BANDED_BLOCK)
    schedule_padding(sch, stages.pads)
    oc_tile, *counts = (int(v) for v in sch.get(stages.main).annotations[TRIP_COUNTS_ANNOTATION])
    n, oc, y, x, lane = sch.get_loops(stages.out)
    if rows is None or cols is None:
        rows, cols = pixel_tile(int(sch.get(y).extent), int(sch.get(x).extent), oc_tile, lanes)
    tile, oc_inner = sch.split(oc, [None, oc_tile])
    y_outer, y_inner = sch.split(y, [None, rows])
    x_outer, x_inner = sch.split(x, [None, cols])
    sch.reorder(n, tile, y_outer, x_outer, oc_inner, y_inner, x_inner, lane)
    task = sch.fuse(n, tile, y_outer, x_outer)
    sch.parallel(task)
    sch.vectorize(lane)
    sch.compute_at(stages.main, task, preserve_unit_loops=True)
    c_n, c_oc, c_y, c_x, c_lane, step, ky, kx = sch.get_loops(stages.main)[-8:]
    sch.reorder(step, ky, kx, c_oc, c_y, c_x, c_lane)
    sch.annotate(step, TRIP_COUNTS_ANNOTATION, [oc_tile, *counts])  # each tile its own count: lowering/banded_trip_counts.py
    sch.unroll(c_oc)
    sch.unroll(c_y)
    sch.unroll(c_x)
    sch.vectorize(c_lane)
    sch.decompose_reduction(stages.main, step)


def banded_design_spaces(sch: s_tir.Schedule, lanes: int) -> list:
    """MetaSchedule design spaces: one per column count of the pixel tile (the divisors of the
    output's width that fit all the accumulators beside the tile's ``oc_tile`` blocks, from about
    a quarter of that up, and the default's), each with a sampled row count (the divisors of the
    height that still fit). The
    tile of output blocks is the weights' layout, chosen by the lowering, not here."""
    block = sch.get_sblock(BANDED_BLOCK)
    oc_tile = int(sch.get(block).annotations[TRIP_COUNTS_ANNOTATION][0])
    height, width = (int(sch.get(loop).extent) for loop in sch.get_loops(block)[2:4])
    budget = max_accumulators(lanes) // oc_tile
    default_rows, default_cols = pixel_tile(height, width, oc_tile, lanes)
    spaces = []
    # columns from about a quarter of the widest tile up: narrower ones leave too few accumulators
    for cols in sorted({c for c in range(1, min(width, budget) + 1) if width % c == 0 and c * 2 >= min(width, budget) // 2} | {default_cols}):
        space = sch.copy()
        rows = [r for r in range(1, height + 1) if height % r == 0 and r * cols <= max(budget, default_rows * default_cols)]
        schedule_banded(space, lanes, categorical(space, rows) if len(rows) > 1 else rows[0], cols)
        spaces.append(space)
    return spaces


def parallel_tasks(shape: BandedShape, lanes: int) -> int:
    """How many parallel steps :func:`schedule_banded` gives ``shape`` (for the lowering's choice of ``oc_tile``)."""
    rows, cols = pixel_tile(shape.height, shape.width, shape.oc_tile, lanes)
    return shape.batch * shape.tiles * (shape.height // rows) * (shape.width // cols)


class BandedConv(CPURule):
    """dlight rule: schedules any PrimFunc whose main block is slimtvm's banded conv."""

    main_block = BANDED_BLOCK

    def schedule_block(self, sch, block):
        schedule_banded(sch, self.lanes)
        return sch
