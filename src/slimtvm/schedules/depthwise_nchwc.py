"""fp32 depthwise conv2d in the blocked NCHW[x]c layout: compute and CPU schedule.

Compute: ``out[n, c, y, x, b] = Σ_{ky,kx} pad(data)[n, c, y·s + ky·d, x·s + kx·d, b] ·
kernel[c, 0, ky, kx, 0, b]`` — each channel block is one SIMD vector, so the kernel is a
vector multiply-add per tap with no broadcast. (TOPI declares ``depthwise_conv2d_NCHWc`` but
registers no compute for it in 0.27.)

Schedule: parallel over (batch, channel block, ``reg_h`` output rows); a register tile of
``reg_h`` rows × ``reg_n`` columns × one channel block accumulates all taps (unrolled) before the
fused epilogue writes it. Depthwise layers are memory-bound: what matters is that each input
vector loaded is reused by the neighbouring outputs of the tile while it is in registers or L1.
"""

from __future__ import annotations

from tvm import s_tir, te

from ..conv_geometry import ConvGeometry
from .cpu_rule import CPURule
from .stages import categorical, schedule_padding, split_stages, zero_padded

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


def schedule_depthwise_nchwc(sch: s_tir.Schedule, reg_h=1, reg_n=1) -> None:
    """Apply the register-tiled schedule (module docstring) to the fused PrimFunc in ``sch``.

    ``reg_h`` and ``reg_n`` are ints (the default) or MetaSchedule random variables (the template):
    the instructions issued do not depend on their values.
    """
    stages = split_stages(sch, DEPTHWISE_BLOCK)
    conv, out = stages.main, stages.out

    inline_padding = bool(stages.pads) and reads_rows_apart(sch, stages.pads[0], out)
    n, chunk, oh, ow, vec = sch.get_loops(out)
    oh_outer, oh_inner = sch.split(oh, [None, reg_h])
    ow_outer, ow_inner = sch.split(ow, [None, reg_n])
    sch.reorder(n, chunk, oh_outer, ow_outer, oh_inner, ow_inner, vec)
    sch.parallel(sch.fuse(n, chunk, oh_outer))
    sch.vectorize(vec)
    sch.compute_at(conv, ow_outer, preserve_unit_loops=True)
    # Below ow_outer: batch, chunk, oh, ow, vec, ky, kx (unit loops are kept).
    tile_h, tile_w, conv_vec, ky, kx = sch.get_loops(conv)[-5:]
    sch.reorder(ky, kx, tile_h, tile_w, conv_vec)
    for loop in (kx, tile_h, tile_w):
        sch.unroll(loop)
    sch.vectorize(conv_vec)
    sch.decompose_reduction(conv, ky)
    if inline_padding:
        # Strided: pad only the input rows each parallel task reads, in L1, instead of writing
        # and re-reading a padded copy of the whole (large, early-stage) input.
        for pad in stages.pads:
            sch.compute_at(pad, sch.get_loops(out)[0], preserve_unit_loops=True)
            sch.vectorize(sch.get_loops(pad)[-1])
    else:
        schedule_padding(sch, stages.pads)


INLINE_PADDING_ROWS_PER_OUTPUT_ROW = 1.5


def reads_rows_apart(sch: s_tir.Schedule, pad, out) -> bool:
    """Whether the padded input has at least :data:`INLINE_PADDING_ROWS_PER_OUTPUT_ROW` rows per
    output row (stride 2 and more). Measured on Zen 5 (MobileNetV2, 1 thread): padding the rows of
    each task in place takes the stride-2 layers from 0.161 to 0.092 ms (96 channels at 112×112),
    0.053 → 0.038 and 0.020 → 0.015 ms, and slows the stride-1 ones by 5–15%, whose three rows
    per output row would each be padded three times."""
    padded_rows = int(sch.get(sch.get_loops(pad)[2]).extent)
    out_rows = int(sch.get(sch.get_loops(out)[2]).extent)
    return padded_rows >= INLINE_PADDING_ROWS_PER_OUTPUT_ROW * out_rows


class DepthwiseNCHWc(CPURule):
    """dlight rule: schedules any PrimFunc whose main block is slimtvm's blocked depthwise conv."""

    main_block = DEPTHWISE_BLOCK

    def schedule_block(self, sch, block):
        _, _, out_h, out_w, _ = (int(sch.get(loop).extent) for loop in sch.get_loops(block)[:5])
        reg_h, reg_n = default_depthwise_tile(out_h, out_w)
        schedule_depthwise_nchwc(sch, reg_h, reg_n)
        return sch


def depthwise_design_spaces(sch: s_tir.Schedule, lanes: int) -> list:
    """One MetaSchedule design space: the default schedule with sampled row and column tiles."""
    loops = sch.get_loops(sch.get_sblock(DEPTHWISE_BLOCK))
    out_h, out_w = int(sch.get(loops[2]).extent), int(sch.get(loops[3]).extent)
    space = sch.copy()
    reg_h = categorical(space, [h for h in (1, 2, 4) if h <= out_h])
    reg_n = categorical(space, [w for w in (1, 2, 4, 7, 8, 14, 16) if w <= out_w])
    schedule_depthwise_nchwc(space, reg_h, reg_n)
    return [space]
