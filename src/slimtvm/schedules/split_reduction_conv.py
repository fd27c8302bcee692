"""A 1×1 conv on a small image in the blocked layout, its sum over input channels split in two:
compute, CPU schedule.

Where a 1×1 conv's weights outweigh its activations, its parallel loop runs groups of output
channels outermost (``stages.spatial_partition``), so each core reads every input channel: at 2
threads half of them from the other core's L2 (which wrote them, splitting its own output by
channels), at ×2.7–3.3 the cost of its own (Emerald Rapids). MobileNetV2's 576 → 160, 960 → 160
and 960 → 320 projections at 7 × 7 (113–188 KB of input) lost 17–24 µs to it at 2 threads.
Here each half of the input channels is multiplied into partial sums of every output by the
parallel chunks of its own half of the loop (the core that wrote those channels, at 2
threads), and a second parallel loop adds the two halves per output channel group, running
the fused epilogue (bias, residual add, activation) on the sum: 2 × the output's bytes cross
between cores instead of the input's.

Compute: ``partial[h, n, o, p, v] = Σ_{c in half h} data[n, c / x, p, c % x] · w[o, c / x, 0, 0,
c % x, v]`` (pixels ``p`` flattened), then ``conv[n, o, y, x, v] = partial[0] + partial[1]``.
The same products, summed in two halves then added (not bit-identical to the one-pass sum;
within float rounding of it).

Schedule: the partial sums in register tiles of ``oc_tile`` channel blocks × a piece of a row
(:func:`tile_pixels`), parallel over (half, groups of channel blocks, pieces), the reduction outside the
unrolled tile; the sum and the epilogue parallel over (channel blocks, rows), vectorized over
the block.
"""

from __future__ import annotations

from tvm import s_tir, te, tirx

from .cpu_rule import CPURule
from .stages import OUT_EWISE_FUSABLE

PARTIAL_BLOCK = "conv2d_NCHWc_split_partial"
SUM_BLOCK = "conv2d_NCHWc_split_sum"
PARTS = 2


def split_reduction_conv2d(data, kernel):
    """TE compute of the module docstring: ``data`` ``[N, C/x, H, W, x]``, ``kernel``
    ``[O/x, C/x, 1, 1, x, x]``; refuses (ValueError) input blocks that two halves do not divide."""
    n, chunks, height, width, block = data.shape
    out_chunks, _, _, _, _, out_block = kernel.shape
    if int(chunks) % PARTS:
        raise ValueError(f"split reduction: {int(chunks)} input channel blocks do not split in {PARTS}")
    half = int(chunks) // PARTS * int(block)
    rc = te.reduce_axis((0, half), name="rc")
    div, mod = tirx.indexdiv, tirx.indexmod
    w = int(width)
    partial = te.compute(
        (PARTS, n, out_chunks, int(height) * w, out_block),
        lambda h, b, o, p, v: te.sum(
            data[b, div(h * half + rc, block), div(p, w), mod(p, w), mod(h * half + rc, block)]
            * kernel[o, div(h * half + rc, block), 0, 0, mod(h * half + rc, block), v],
            axis=[rc],
        ),
        name=PARTIAL_BLOCK,
    )
    return te.compute(
        (n, out_chunks, height, width, out_block), lambda b, o, y, x, v: partial[0, b, o, y * w + x, v] + partial[1, b, o, y * w + x, v], name=SUM_BLOCK
    )


def split_reduction_primfunc(data, kernel):
    """The PrimFunc ``(data, kernel, out)`` of :func:`split_reduction_conv2d` for TE placeholders,
    marked out-element-wise fusable (its bias, residual add and activation fuse after it)."""
    out = split_reduction_conv2d(data, kernel)
    return te.create_prim_func([data, kernel, out]).with_attr("op_pattern", OUT_EWISE_FUSABLE).without_attr("global_symbol")


def schedule_split_reduction(sch: s_tir.Schedule, lanes: int) -> None:
    """Apply the module docstring's schedule to the fused PrimFunc in ``sch``."""
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    names = [sch.get(block).name_hint for block in blocks]
    partial = blocks[names.index(PARTIAL_BLOCK)]
    after = blocks[names.index(SUM_BLOCK) :]
    for block in after[:-1]:
        sch.compute_inline(block)
    out = after[-1]

    n, oc, y, x, vec = sch.get_loops(out)
    chunk = sch.fuse(n, oc, y)
    sch.parallel(chunk)
    sch.vectorize(vec)

    half, n, oc, pixel, vec, rc = sch.get_loops(partial)
    oc_chunks = int(sch.get(oc).extent)
    width = int(sch.get(sch.get_loops(out)[1]).extent)
    block = int(sch.get(vec).extent)
    oc_tile = 2 if lanes >= 16 and oc_chunks % 2 == 0 else 1
    oc_outer, oc_inner = sch.split(oc, [None, oc_tile])
    row, px = sch.split(pixel, [None, tile_pixels(width)])
    rc_outer, rc_inner = sch.split(rc, [None, block])
    sch.reorder(half, n, oc_outer, row, rc_outer, rc_inner, oc_inner, px, vec)
    task = sch.fuse(half, n, oc_outer, row)
    sch.parallel(task)
    sch.unroll(oc_inner)
    sch.unroll(px)
    sch.vectorize(vec)
    sch.decompose_reduction(partial, rc_outer)


MAX_TILE_PIXELS = 7  # 2 × 7 accumulators, 7 broadcasts and 2 weight vectors in 32 zmm registers


def tile_pixels(width: int) -> int:
    """The partial sums' register tile along a row: the widest divisor of ``width`` of at most
    :data:`MAX_TILE_PIXELS` pixels."""
    return max(d for d in range(1, min(width, MAX_TILE_PIXELS) + 1) if width % d == 0)


class SplitReductionConv(CPURule):
    """dlight rule: schedules any PrimFunc whose main block is the split-reduction 1×1 conv."""

    main_block = PARTIAL_BLOCK

    def schedule_block(self, sch, block):
        schedule_split_reduction(sch, self.lanes)
        return sch
