"""fp32 depthwise conv2d in the blocked NCHW[x]c layout: compute and CPU schedule.

Compute: ``out[n, c, y, x, b] = Σ_{ky,kx} pad(data)[n, c, y·s + ky·d, x·s + kx·d, b] ·
kernel[c, 0, ky, kx, 0, b]`` — each channel block is one SIMD vector, so the kernel is a
vector multiply-add per tap with no broadcast. (TOPI declares ``depthwise_conv2d_NCHWc`` but
registers no compute for it in 0.27.)

Where a 1×1 conv alone reads a depthwise conv's output on a large image, the two run as one
kernel instead (schedules/depthwise_projection.py).

Schedule: parallel over (batch, channel block, ``reg_h`` output rows; rows outside the channel
blocks where the 1×1 convs around it run image regions too, :func:`_partition_like_the_expansion`,
so that a thread reads the rows its core wrote in the conv before and writes those the conv
after reads; on few channels of a large image, bands of rows outside the channel blocks,
:func:`_bands_like_the_conv_before`); a register tile of
``reg_h`` rows × ``reg_n`` columns × one channel block accumulates all taps (unrolled) into a
small per-task buffer, and the fused epilogue writes the task's rows from it while they are in L1.
Depthwise layers are memory-bound: what matters is that each input vector loaded is reused by the
neighbouring outputs of the tile while it is in registers or L1, and that nothing else is written.

Zero padding is never materialised: the padded read stays a conditional load in the conv, and the
column-tile loop is partitioned into its first tile, the interior tiles and its last tile, so that
TVM's simplifier proves every column condition of the interior tiles true (and, once the edge
tiles are unrolled, decides theirs); only a row condition per kernel row stays, a scalar test per
task. MobileNetV2 on Zen 4 (1 thread, in the model, the builds profiled in turns): its 17 depthwise
layers took 0.90 ms against 1.11 ms with padded copies (a separate padding stage for stride 1,
each task's rows padded in place for stride 2): the 96-channel 112→56 layer 0.18 against 0.25 ms,
the 14×14 and 7×7 layers about half. A ``Select`` of a clamped load in place of the conditional
load took 0.95 ms.
"""

from __future__ import annotations

from tvm import s_tir, te

from ..conv_geometry import ConvGeometry
from .cpu_rule import CPURule
from .stages import categorical, spatial_partition, split_stages, zero_padded

DEPTHWISE_BLOCK = "depthwise_conv2d_NCHWc"


def is_depthwise(data_shape, kernel_shape, groups: int) -> bool:
    """Blocked shapes of a depthwise conv with multiplier 1: one input channel per group."""
    channels = int(data_shape[1]) * int(data_shape[4])
    out_channels = int(kernel_shape[0]) * int(kernel_shape[5])
    return groups == channels == out_channels and int(kernel_shape[1]) == 1 and int(kernel_shape[4]) == 1


def depthwise_conv2d_nchwc(data, kernel, strides, padding, dilation, out_dtype):
    """TE compute of a blocked depthwise conv; ``padding`` is (top, left, bottom, right)."""
    n, chunks, height, width, block = data.shape
    _, _, kh, kw, _, _ = kernel.shape
    geometry = ConvGeometry.of(height, width, kh, kw, strides, padding, dilation)
    padded = zero_padded(data, geometry)
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    return te.compute(
        (n, chunks, geometry.out_h, geometry.out_w, block),
        lambda b, c, y, x, v: te.sum(
            padded[b, c, geometry.padded_row(y, ry), geometry.padded_col(x, rx), v].astype(out_dtype) * kernel[c, 0, ry, rx, 0, v].astype(out_dtype),
            axis=[ry, rx],
        ),
        name=DEPTHWISE_BLOCK,
    )


def default_depthwise_tile(out_h: int, out_w: int) -> tuple[int, int]:
    """(reg_h, reg_n): up to 8 accumulators along the row, preferring a divisor of the width."""
    reg_n = max(d for d in range(1, min(8, out_w) + 1) if out_w % d == 0)
    if reg_n < 4 and out_w > reg_n:
        reg_n = min(8, out_w)
    return 1, reg_n


def schedule_depthwise_nchwc(sch: s_tir.Schedule, reg_h=1, reg_n: int = 1) -> None:
    """Apply the register-tiled schedule (module docstring) to the fused PrimFunc in ``sch``.

    ``reg_h`` is an int (the default) or a MetaSchedule random variable; ``reg_n`` must be an int,
    because the column tiles are partitioned into edge and interior tiles by their count.
    """
    stages = split_stages(sch, DEPTHWISE_BLOCK)
    conv, out = stages.main, stages.out
    for pad in stages.pads:
        sch.compute_inline(pad)
    n, chunk, oh, ow, vec, ky, kx = sch.get_loops(conv)
    regions = _partition_like_the_expansion(sch, conv)
    bands = 0 if regions else _bands_like_the_conv_before(sch, conv, reg_h)
    if bands:
        band, oh = sch.split(oh, [bands, None])
    oh_outer, oh_inner = sch.split(oh, [None, reg_h])
    ow_outer, ow_inner = sch.split(ow, [None, reg_n])
    outer = (n, oh_outer, chunk) if regions else (n, band, chunk, oh_outer) if bands else (n, chunk, oh_outer)
    sch.reorder(*outer, ow_outer, ky, kx, oh_inner, ow_inner, vec)
    task = sch.fuse(*outer)
    sch.parallel(task)
    # The epilogue is placed before the partition: its rows are read from the conv's loops here,
    # and the partition's blocks would hide them (it would compute the whole output per task).
    sch.reverse_compute_at(out, task, preserve_unit_loops=True)
    sch.vectorize(sch.get_loops(out)[-1])
    tiles = int(sch.get(ow_outer).extent)
    edges = [1, tiles - 2] if tiles >= 3 else [1] if tiles == 2 else []
    parts = sch.loop_partition(ow_outer, edges) if edges else [ow_outer]
    for part in parts:
        tile = sch.get_child_blocks(part)[0] if edges else conv
        ky, kx, tile_h, tile_w, tile_vec = sch.get_loops(tile)[-5:]
        for loop in (kx, tile_h, tile_w):
            sch.unroll(loop)
        sch.vectorize(tile_vec)
        sch.decompose_reduction(tile, ky)


EXPANSION = 6  # MobileNetV2's (and MnasNet's, EfficientNet's) inverted residual blocks


def _partition_like_the_expansion(sch, conv) -> bool:
    """Whether the depthwise conv runs image regions outermost: as the 1×1 expansion conv that
    feeds it in an inverted residual block (``C / 6 → C`` channels, on the depthwise conv's input
    image) would by :func:`~.stages.spatial_partition`. The depthwise weights are too small to
    matter; what matters is that each core reads what its core wrote, and the 1×1 convs on both
    sides decide that: regions on MobileNetV2's 28×28 and 14×14 blocks (and the 28×28 → 14×14 and
    14×14 → 7×7 ones), channel groups on its 7×7 blocks, whose 1×1 convs carry 0.6–1.6 MB of
    weights, and on the 56×56 → 28×28 one, whose input a conv on 56×56 pixels wrote by channel
    groups (rows outermost there ran ×1.69 at 2 threads against ×1.8–2.0 for the others)."""
    data = sch.get(conv).reads[0].source.shape  # N, C/b, H, W, b
    channels, in_pixels = int(data[1]) * int(data[4]), int(data[2]) * int(data[3])
    expansion_weights = 4 * channels * (channels // EXPANSION)
    return spatial_partition(in_pixels, expansion_weights, 4 * (channels + channels // EXPANSION) * in_pixels)


BAND_COUNTS = (16, 8, 4, 2)
FEW_CHANNELS = 32


def _bands_like_the_conv_before(sch, conv, reg_h) -> int:
    """Bands of output rows to run outermost (0: none) for a depthwise conv on at most
    :data:`FEW_CHANNELS` channels: the conv that wrote its input (a stem, a 1×1 conv) covers so
    few channels with one register tile that it runs image regions in parallel whatever its rule,
    so each core holds a band of rows of every channel. Bands (16 where they divide the rows, so
    that 2, 4, 8 or 16 threads each get whole ones) keep each task on one channel plane, which rows
    outermost did not (each row of work touching every plane: twice as slow at 1 thread).
    MobileNetV2's first depthwise conv on Emerald Rapids (per kernel in the model, builds in turns,
    three runs): 2 threads 106–125 → 94–114 µs, and the 1×1 conv after it, which now reads what
    its own core wrote, 77–104 → 59–92 µs; 1 thread within 0–5%. (Since session 49 that conv and
    the 1×1 conv after it run as one kernel, schedules/depthwise_projection.py; the bands stay for
    depthwise convs that kernel does not take: small images, a large image's stride-2 conv, an
    output read twice.)

    Tried (session 41): image regions for every conv on images larger than 28 × 28 whose weights
    are smaller than its activations (``stages.spatial_partition`` without its pixel limit), with
    these bands for the depthwise convs between them: MobileNetV2's 112 × 112 and 56 × 56 kernels
    5–25% faster at 2 threads, but its depthwise convs there 4–8% slower at 1, the whole model
    within the VM's noise. Not kept."""
    data = sch.get(conv).reads[0].source.shape
    out_h = int(sch.get(sch.get_loops(conv)[2]).extent)
    if int(data[1]) * int(data[4]) > FEW_CHANNELS or not isinstance(reg_h, int):
        return 0
    return next((count for count in BAND_COUNTS if out_h % (count * reg_h) == 0), 0)


class DepthwiseNCHWc(CPURule):
    """dlight rule: schedules any PrimFunc whose main block is slimtvm's blocked depthwise conv."""

    main_block = DEPTHWISE_BLOCK

    def schedule_block(self, sch, block):
        _, _, out_h, out_w, _ = (int(sch.get(loop).extent) for loop in sch.get_loops(block)[:5])
        reg_h, reg_n = default_depthwise_tile(out_h, out_w)
        schedule_depthwise_nchwc(sch, reg_h, reg_n)
        return sch


def depthwise_design_spaces(sch: s_tir.Schedule, lanes: int) -> list:
    """MetaSchedule design spaces: one per column tile (the partition into edge and interior
    tiles needs its count), each with a sampled row tile."""
    loops = sch.get_loops(sch.get_sblock(DEPTHWISE_BLOCK))
    out_h, out_w = int(sch.get(loops[2]).extent), int(sch.get(loops[3]).extent)
    spaces = []
    for reg_n in sorted({w for w in (4, 7, 8, 14, 16) if w <= out_w} | {default_depthwise_tile(out_h, out_w)[1]}):
        space = sch.copy()
        reg_h = categorical(space, [h for h in (1, 2, 4) if h <= out_h])
        schedule_depthwise_nchwc(space, reg_h, reg_n)
        spaces.append(space)
    return spaces
