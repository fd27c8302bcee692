"""Direct sparse convolution: NCHW or NCHW[b]c in and out, weights as CSR constants (sparse_weights.py).

The PrimFunc has three stages:

- ``sparse_conv_pack`` (opaque): the input (plain or channel-blocked, whatever layout its
  neighbours chose), zero-padded and phase-split into the flat buffer the offsets index (a
  stride-2 conv from NCHW reads each input row once for both column phases: :func:`column_pairs`);
- ``sparse_conv_main`` (opaque): per task (a block of ``vector`` virtual output pixels × a
  group of output channels), for each input-channel chunk and output channel, register blocks
  of accumulators and, per nonzero weight, a broadcast and ``vector / lanes`` FMAs reading the
  input at ``offset + pixel`` — no im2col, no dense weights. Natural layout: two blocks take
  alternate nonzeros (independent FMA chains) and are added at the end. Aligned layout: block
  ``b`` takes the taps of column offset ``b`` (aligned loads only) and the output is the sum of
  the blocks, block ``b`` shifted by ``b`` floats (sparse_weights.py); one loop per tap mask,
  each input vector loaded once for the FMAs of every block in its mask (grouped taps) — the
  masks are unrolled, so each loop's FMAs are fixed at compile time; with ``layout.prefetch``,
  each entry first prefetches the first input line of the entry that many further on;
- ``sparse_conv_out``: the spatial block that drops the spare columns of each row and writes
  the output layout (plain or channel-blocked).

Reading and writing the blocked layout here costs about what a separate relayout would (strided
copies); the lowering keeps chains of sparse k×k convs in plain NCHW, where both are contiguous.

The first two are written as loops (their trip counts come from ``row_ptr``), so MetaSchedule
cannot reshape them (the family is not tunable); the register block, the alignment and the
chunking are parameters of the layout (:meth:`SparseConvLayout.choose`, from a sweep of
ResNet-18's shapes). Index expressions are Python helpers inlined where used: a scalar bound
inside the PrimFunc becomes a one-element buffer, which TVM allocates from its workspace pool on
every iteration of a parallel loop (thousands of calls per run; removing them made the kernel
1.1–1.5× faster). For the same reason each register block is a buffer of its own: TVM keeps on
the stack (where LLVM turns it into registers) only a "global"-scope buffer under 1 KB; anything
else comes from the workspace pool per task, and the accumulators were stored and reloaded
around every loop over nonzeros. The PrimFunc is marked out-element-wise fusable, so FuseOps
fuses the bias, residual add and activation after it; :class:`SparseConv` inlines them into
``sparse_conv_out``.
"""

from __future__ import annotations

import math

from tvm import s_tir, tirx
from tvm.script import tirx as T

from .cpu_rule import CPURule
from .sparse_weights import MAX_BLOCKS, SparseConvLayout
from .stages import OUT_EWISE_FUSABLE

COPY_VECTOR = 16  # floats per vector of the input copy
EVEN_LANES = [2 * lane for lane in range(COPY_VECTOR)]  # the even floats of two vectors
MAX_VECTOR_WIDTH = 16  # floats in one LLVM vector of the accumulators (an AVX-512 register)
MIN_TASKS = 16  # pixel blocks × channel groups the main stage offers to the thread pool


def _channel_groups(layout: SparseConvLayout) -> int:
    """Output-channel groups per pixel block, so that a small image still feeds :data:`MIN_TASKS`
    threads: of the counts up to the one that makes that many tasks, the one that balances them
    best (a task takes 1 / groups of a block's time, the threads ceil(tasks / MIN_TASKS) tasks
    each), the fewest among equals — each group reads the block's input window again (a 28×28
    image's 7 blocks: 2 groups, not 3; the 64 → 128 stride-2 conv 1.05× faster at 1 thread and
    1.06× at 2)."""
    most = max(1, min(-(-MIN_TASKS // layout.blocks), layout.out_channels // 8))
    return min(range(1, most + 1), key=lambda groups: (math.ceil(layout.blocks * groups / MIN_TASKS) / groups, groups))


def _shape(batch: int, channels: int, height: int, width: int, block: int) -> tuple:
    """NCHW, or NCHW[block]c for ``block`` > 0, as int64 dims."""
    dims = (batch, channels, height, width) if not block else (batch, channels // block, height, width, block)
    return tuple(T.int64(d) for d in dims)


def sparse_conv2d_primfunc(layout: SparseConvLayout, batch: int, in_block: int = 0, out_block: int = 0):
    """The PrimFunc ``(x, values [nnz], offsets [entries], row_ptr, value_ptr, out)`` for
    ``layout`` and ``batch`` images (module doc), for any number of nonzero weights and entries
    (symbolic sizes: layers of one shape share it); ``x`` is NCHW, or NCHW[in_block]c when
    ``in_block`` > 0, and ``out`` likewise with ``out_block``. Refuses channel counts that are not
    a multiple of their block, aligned layouts whose register block is not whole vectors or that
    have more than :data:`MAX_BLOCKS` column offsets (or as many as a vector's lanes), and more
    than two accumulator sets."""
    if (in_block and layout.in_channels % in_block) or (out_block and layout.out_channels % out_block):
        raise ValueError(f"channels {layout.in_channels} → {layout.out_channels} do not fill blocks of {in_block} → {out_block}")
    if layout.align and (layout.vector % layout.align or layout.sums > min(layout.align - 1, MAX_BLOCKS)):
        raise ValueError(f"aligned sparse layout needs whole vectors and at most {MAX_BLOCKS} column offsets, fewer than lanes: {layout}")
    if layout.accumulator_sets > 2:
        raise ValueError(f"sparse layout with more than 2 accumulator sets: {layout}")
    g = layout.geometry
    n_img, channels, height, width = batch, layout.in_channels, g.height, g.width
    out_channels, out_h, out_w = layout.out_channels, g.out_h, g.out_w
    cols_q, plane, vector = layout.cols_q, layout.plane, layout.vector
    blocks, chunks, size = layout.blocks, layout.chunks, layout.input_size
    channel_stride, sums, tap_masks = layout.channel_stride, layout.sums, layout.tap_masks
    masks = len(tap_masks)
    groups = _channel_groups(layout)
    per_group = -(-out_channels // groups)
    slots = len(layout.phases)
    pairs_of_columns = not in_block and g.stride_w == 2  # stride-2 columns from NCHW rows: read contiguously
    simd = layout.align or math.gcd(vector, MAX_VECTOR_WIDTH)  # one LLVM vector of the register blocks: a power of two
    sets, ahead = layout.accumulator_sets, layout.prefetch
    rows = vector // simd + (sums > 1)  # vectors per register block (aligned: one more, for the shifted sum)
    # per stored phase: its row and column phase and the interior (rows, cols) that hold input
    phase_h, phase_w = [ph for ph, _ in layout.phases], [pw for _, pw in layout.phases]
    row0, row1 = zip(*(layout.phase_rows(ph) for ph in phase_h))
    col0, col1 = zip(*(layout.phase_cols(pw) for pw in phase_w))
    i64 = T.int64

    # index expressions, inlined where used (module doc)
    def base(slot, c):  # where channel c of one phase starts
        return slot * plane + c * channel_stride

    def first(slot):  # the first column of a phase row that holds input
        return pick(slot, col0)

    def length(slot):  # how many columns of a phase row hold input
        return pick(slot, col1) - pick(slot, col0)

    def row(slot, i):  # the i-th phase row that holds input
        return pick(slot, row0) + i

    def source_column(slot):  # the input column the first interior column of a phase row reads
        return first(slot) * g.stride_w + pick(slot, phase_w) - g.left

    def paired(slot):  # interior vectors whose contiguous 2-vector read stays within the input row
        return T.max(T.min(length(slot) // COPY_VECTOR, (width - 2 * COPY_VECTOR - source_column(slot)) // (2 * COPY_VECTOR) + 1), 0)

    def channel(task, o_in):  # the output channel of a task's o_in-th row
        return (task % groups) * per_group + o_in

    def pixel(task):  # the first virtual output pixel of a task
        return (task // groups) * vector

    def csr_row(task, chunk, o_in, block):  # the CSR row of (chunk, output channel, register block)
        return (chunk * out_channels + channel(task, o_in)) * masks + block

    def first_nonzero(row_ptr, task, chunk, o_in, block):  # the CSR row's first nonzero
        return row_ptr[csr_row(task, chunk, o_in, block)]

    def adds_into(m, b, u):  # whether vector u of an entry of the m-th tap mask adds into block b
        return tirx.all((pick(m, tap_masks) >> b) & 1 == 1, tirx.any(b > 0, u < vector // simd))

    mask_sizes = [bin(mask).count("1") for mask in tap_masks]  # values per entry of each tap mask
    mask_ranks = [bin(mask & ((1 << b) - 1)).count("1") for mask in tap_masks for b in range(sums)]  # block b's value in an entry

    def count(row_ptr, task, chunk, o_in, block):  # nonzeros in the CSR row
        return row_ptr[csr_row(task, chunk, o_in, block) + 1] - row_ptr[csr_row(task, chunk, o_in, block)]

    def shifted_sum(acc0, acc1, acc2, acc3, u):  # output vector u of an aligned block: Σ over blocks b of block b, b floats on
        def vector_of(b, w):
            return tirx.BufferLoad((acc0, acc1, acc2, acc3)[b], [w, tirx.Ramp(0, 1, simd)])

        total = vector_of(0, u)
        for b in range(1, sums):
            total = total + tirx.Shuffle([vector_of(b, u), vector_of(b, u + 1)], [b + lane for lane in range(simd)])
        return total

    @T.macro
    def zero_block(acc, vectors):
        for u in T.unroll(vectors):
            for v in T.vectorized(simd):
                acc[u, v] = T.float32(0)

    @T.macro
    def add_tap(acc, b, values, offsets, row_ptr, value_ptr, packed, n, task, chunk, o_in, m, k, u):  # vector u of an entry, into block b
        if adds_into(m, b, u):
            for v in T.vectorized(simd):
                acc[u, v] = (
                    acc[u, v]
                    + values[value_ptr[csr_row(task, chunk, o_in, m)] + k * pick(m, mask_sizes) + pick(m * sums + b, mask_ranks)]
                    * packed[n, offsets[first_nonzero(row_ptr, task, chunk, o_in, m) + k] + pixel(task) + u * simd + v]
                )

    @T.macro
    def prefetch_entry(packed, offsets, row_ptr, n, task, chunk, o_in, m, k):  # entry k + ahead's first input line
        if k + ahead < count(row_ptr, task, chunk, o_in, m):
            T.evaluate(
                T.call_intrin(
                    "void", "tirx.prefetch", T.address_of(packed[n, offsets[first_nonzero(row_ptr, task, chunk, o_in, m) + k + ahead] + pixel(task)]), 0, 3, 1
                )
            )

    @T.macro
    def add_nonzero(acc, index, values, offsets, packed, n, task):  # the nonzero at ``index`` (natural layout)
        for u in T.unroll(vector // simd):
            for v in T.vectorized(simd):
                acc[u, v] = acc[u, v] + values[index] * packed[n, offsets[index] + pixel(task) + u * simd + v]

    @T.macro
    def zero_padding(packed, n, slot, c):  # zeros where the taps of real outputs read padding
        # whole rows above and below the image, and each image row's columns left and right of it
        for t in range(pick(slot, row0) * cols_q):
            packed[n, base(slot, c) + t] = T.float32(0)
        for t in range(channel_stride - pick(slot, row1) * cols_q):
            packed[n, base(slot, c) + pick(slot, row1) * cols_q + t] = T.float32(0)
        for i in range(pick(slot, row1) - pick(slot, row0)):
            for j in range(first(slot)):
                packed[n, base(slot, c) + row(slot, i) * cols_q + j] = T.float32(0)
            for j in range(cols_q - first(slot) - length(slot)):
                packed[n, base(slot, c) + row(slot, i) * cols_q + first(slot) + length(slot) + j] = T.float32(0)

    # one read per input row for both column phases (column_pairs): pair p's even input columns
    # go to phase slot even_slot[p], its odd ones to odd_slot[p]
    pairs = column_pairs(layout) if not in_block and width >= COPY_VECTOR // 2 else ()
    even_slot, odd_slot = [even for even, _ in pairs] or [0], [odd for _, odd in pairs] or [0]
    pair_read = max((r for r in (2 * COPY_VECTOR, COPY_VECTOR, COPY_VECTOR // 2) if r <= width), default=2)
    last_read = (width - pair_read) // 2 * 2  # an even start whose read ends within the row
    even_lanes, odd_lanes = list(range(0, pair_read, 2)), list(range(1, pair_read, 2))
    first_columns = (g.left // 2, (g.left + 1) // 2)  # phase columns of input columns 0 and 1

    def pair_input_row(p, i):  # the input row of pair p's i-th interior row
        return row(pick(p, even_slot), i) * g.stride_h + pick(pick(p, even_slot), phase_h) - g.top

    def pair_column(p, c, i, odd):  # where input column 0 (odd = 0) or 1 (odd = 1) of that row goes
        slot = pick(p, odd_slot if odd else even_slot)
        return base(slot, c) + row(slot, i) * cols_q + first_columns[odd]

    @T.macro
    def copy_column_pair(x, packed, n, p, c, i, start):  # input columns [start, start + pair_read), start even
        packed[n, T.Ramp(pair_column(p, c, i, 0) + start // 2, 1, pair_read // 2)] = T.Shuffle(
            [x[n, c, pair_input_row(p, i), T.Ramp(start, 1, pair_read)]], even_lanes
        )
        packed[n, T.Ramp(pair_column(p, c, i, 1) + start // 2, 1, pair_read // 2)] = T.Shuffle(
            [x[n, c, pair_input_row(p, i), T.Ramp(start, 1, pair_read)]], odd_lanes
        )

    @T.prim_func(s_tir=True, private=True)
    def sparse_conv2d(
        x: T.Buffer(_shape(n_img, channels, height, width, in_block), "float32"),
        values_handle: T.handle,
        offsets_handle: T.handle,
        row_ptr: T.Buffer((i64(chunks * out_channels * masks + 1),), "int32"),
        value_ptr: T.Buffer((i64(chunks * out_channels * masks + 1),), "int32"),
        out: T.Buffer(_shape(n_img, out_channels, out_h, out_w, out_block), "float32"),
    ):
        T.func_attr({"op_pattern": OUT_EWISE_FUSABLE, "tirx.noalias": True})
        nnz = T.int64()
        values = T.match_buffer(values_handle, (nnz,), "float32")
        entries = T.int64()
        offsets = T.match_buffer(offsets_handle, (entries,), "int32")
        packed = T.sblock_alloc_buffer((n_img, size), "float32")
        virtual = T.sblock_alloc_buffer((n_img, out_channels, blocks * vector), "float32")
        with T.sblock("sparse_conv_pack"):
            T.reads(whole(x))
            T.writes(packed[0:n_img, 0:size])
            for n in range(n_img):
                if len(pairs) > 0:  # stride 2 from NCHW, both column phases whole: one read of each input row
                    for p in T.unroll(len(pairs)):
                        for c in T.parallel(channels):
                            zero_padding(packed, n, pick(p, even_slot), c)
                            zero_padding(packed, n, pick(p, odd_slot), c)
                            for i in range(pick(pick(p, even_slot), row1) - pick(pick(p, even_slot), row0)):
                                for jb in range(width // pair_read):
                                    copy_column_pair(x, packed, n, p, c, i, jb * pair_read)
                                if width % pair_read > 0:  # the rest: one read ending at the row's end
                                    copy_column_pair(x, packed, n, p, c, i, last_read)
                                if width % 2 == 1:  # an odd width's last column is even
                                    packed[n, pair_column(p, c, i, 0) + (width - 1) // 2] = x[n, c, pair_input_row(p, i), width - 1]
                else:
                    for slot in T.unroll(slots):
                        for c in T.parallel(channels):
                            zero_padding(packed, n, slot, c)
                            for i in range(pick(slot, row1) - pick(slot, row0)):
                                if pairs_of_columns:  # stride 2 from NCHW: contiguous reads, even lanes kept
                                    for jb in range(paired(slot)):
                                        packed[n, T.Ramp(base(slot, c) + row(slot, i) * cols_q + first(slot) + jb * COPY_VECTOR, 1, COPY_VECTOR)] = T.Shuffle(
                                            [
                                                x[
                                                    n,
                                                    c,
                                                    row(slot, i) * g.stride_h + pick(slot, phase_h) - g.top,
                                                    T.Ramp(source_column(slot) + jb * 2 * COPY_VECTOR, 1, 2 * COPY_VECTOR),
                                                ]
                                            ],
                                            EVEN_LANES,
                                        )
                                    for jt in range(length(slot) - paired(slot) * COPY_VECTOR):
                                        packed[n, base(slot, c) + row(slot, i) * cols_q + first(slot) + paired(slot) * COPY_VECTOR + jt] = x[
                                            n,
                                            c,
                                            row(slot, i) * g.stride_h + pick(slot, phase_h) - g.top,
                                            source_column(slot) + (paired(slot) * COPY_VECTOR + jt) * 2,
                                        ]
                                else:
                                    for jb in range(length(slot) // COPY_VECTOR):  # the interior, in whole vectors, then the rest
                                        for jv in T.vectorized(COPY_VECTOR):
                                            packed[n, base(slot, c) + row(slot, i) * cols_q + first(slot) + jb * COPY_VECTOR + jv] = read(
                                                x,
                                                n,
                                                c,
                                                row(slot, i) * g.stride_h + pick(slot, phase_h) - g.top,
                                                (first(slot) + jb * COPY_VECTOR + jv) * g.stride_w + pick(slot, phase_w) - g.left,
                                                in_block,
                                            )
                                    for jt in range(length(slot) % COPY_VECTOR):
                                        packed[n, base(slot, c) + row(slot, i) * cols_q + first(slot) + length(slot) - length(slot) % COPY_VECTOR + jt] = read(
                                            x,
                                            n,
                                            c,
                                            row(slot, i) * g.stride_h + pick(slot, phase_h) - g.top,
                                            (first(slot) + length(slot) - length(slot) % COPY_VECTOR + jt) * g.stride_w + pick(slot, phase_w) - g.left,
                                            in_block,
                                        )
                for t in range(size - slots * plane):  # the spare reads of the last block
                    packed[n, slots * plane + t] = T.float32(0)
        with T.sblock("sparse_conv_main"):
            T.reads(
                packed[0:n_img, 0:size],
                values[0:nnz],
                offsets[0:entries],
                row_ptr[0 : chunks * out_channels * masks + 1],
                value_ptr[0 : chunks * out_channels * masks + 1],
            )
            T.writes(virtual[0:n_img, 0:out_channels, 0 : blocks * vector])
            for n in range(n_img):
                for task in T.parallel(blocks * groups):
                    # one buffer per register block, each under TVM's 1 KB stack limit (module doc)
                    acc0 = T.alloc_buffer((rows, simd), "float32", scope="global")
                    acc1 = T.alloc_buffer((rows, simd), "float32", scope="global")
                    acc2 = T.alloc_buffer((rows, simd), "float32", scope="global")
                    acc3 = T.alloc_buffer((rows, simd), "float32", scope="global")
                    for chunk in range(chunks):
                        for o_in in range(per_group):
                            if (task % groups) * per_group + o_in < out_channels:
                                if sums > 1:  # aligned: block b sums the taps of column offset b (one vector longer for b > 0)
                                    zero_block(acc0, rows)
                                    zero_block(acc1, rows)
                                    if sums > 2:
                                        zero_block(acc2, rows)
                                    if sums > 3:
                                        zero_block(acc3, rows)
                                    for m in T.unroll(masks):  # entries of the m-th tap mask: one load per vector, an FMA per block in the mask
                                        for k in range(count(row_ptr, task, chunk, o_in, m)):
                                            if ahead > 0:
                                                prefetch_entry(packed, offsets, row_ptr, n, task, chunk, o_in, m, k)
                                            for u in T.unroll(rows):
                                                add_tap(acc0, 0, values, offsets, row_ptr, value_ptr, packed, n, task, chunk, o_in, m, k, u)
                                                add_tap(acc1, 1, values, offsets, row_ptr, value_ptr, packed, n, task, chunk, o_in, m, k, u)
                                                if sums > 2:
                                                    add_tap(acc2, 2, values, offsets, row_ptr, value_ptr, packed, n, task, chunk, o_in, m, k, u)
                                                if sums > 3:
                                                    add_tap(acc3, 3, values, offsets, row_ptr, value_ptr, packed, n, task, chunk, o_in, m, k, u)
                                    for u in T.unroll(vector // simd):
                                        virtual[n, channel(task, o_in), T.Ramp(pixel(task) + u * simd, 1, simd)] = shifted_sum(
                                            acc0, acc1, acc2, acc3, u
                                        ) + T.if_then_else(
                                            chunk == 0,
                                            T.Broadcast(T.float32(0), simd),
                                            virtual[n, channel(task, o_in), T.Ramp(pixel(task) + u * simd, 1, simd)],
                                        )
                                else:  # natural: nonzero k·sets + a goes to set a
                                    for u in T.unroll(rows):
                                        for v in T.vectorized(simd):
                                            acc0[u, v] = T.if_then_else(chunk == 0, T.float32(0), virtual[n, channel(task, o_in), pixel(task) + u * simd + v])
                                    if sets > 1:
                                        zero_block(acc1, rows)
                                    for k in range(count(row_ptr, task, chunk, o_in, 0) // sets):
                                        add_nonzero(acc0, first_nonzero(row_ptr, task, chunk, o_in, 0) + k * sets, values, offsets, packed, n, task)
                                        if sets > 1:
                                            add_nonzero(acc1, first_nonzero(row_ptr, task, chunk, o_in, 0) + k * sets + 1, values, offsets, packed, n, task)
                                    for k in range(count(row_ptr, task, chunk, o_in, 0) % sets):
                                        add_nonzero(
                                            acc0,
                                            row_ptr[csr_row(task, chunk, o_in, 0) + 1] - count(row_ptr, task, chunk, o_in, 0) % sets + k,
                                            values,
                                            offsets,
                                            packed,
                                            n,
                                            task,
                                        )
                                    for u in T.unroll(rows):
                                        if sets > 1:
                                            for v in T.vectorized(simd):
                                                acc0[u, v] = acc0[u, v] + acc1[u, v]
                                        for v in T.vectorized(simd):
                                            virtual[n, channel(task, o_in), pixel(task) + u * simd + v] = acc0[u, v]
        if out_block > 0:
            for n, oc, y, x_, ob in T.grid(*_shape(n_img, out_channels, out_h, out_w, out_block)):
                with T.sblock("sparse_conv_out"):
                    vn, voc, vy, vx, vb = T.axis.remap("SSSSS", [n, oc, y, x_, ob])
                    out[vn, voc, vy, vx, vb] = virtual[vn, voc * i64(out_block) + vb, vy * i64(cols_q) + vx]
        else:
            for n, o, y, x_ in T.grid(*_shape(n_img, out_channels, out_h, out_w, 0)):
                with T.sblock("sparse_conv_out"):
                    vn, vo, vy, vx = T.axis.remap("SSSS", [n, o, y, x_])
                    out[vn, vo, vy, vx] = virtual[vn, vo, vy * i64(cols_q) + vx]

    return sparse_conv2d


def column_pairs(layout: SparseConvLayout) -> tuple:
    """For a stride-2 layout whose column phases both hold every input column of their parity
    (not clipped by ``cols_q``), per row phase the slots of (the phase of even input columns, the
    phase of odd ones); else ``()``, and the pack copies each phase on its own (reading each input
    row once per column phase)."""
    g = layout.geometry
    if g.stride_w != 2 or not all(layout.holds_every_column(pw) for pw in (0, 1)):
        return ()
    slot = {phase: index for index, phase in enumerate(layout.phases)}
    row_phases = sorted({ph for ph, _ in layout.phases})
    even, odd = g.left % 2, (g.left + 1) % 2  # the phases of input columns 0 and 1
    if any((ph, pw) not in slot for ph in row_phases for pw in (0, 1)):
        return ()
    return tuple((slot[(ph, even)], slot[(ph, odd)]) for ph in row_phases)


def whole(buffer):
    """The region covering all of ``buffer``."""
    from tvm import ir, tirx

    return tirx.BufferRegion(buffer, [ir.Range.from_min_extent(0, extent) for extent in buffer.shape])


def read(x, n, c, y, x_, block: int):
    """``x[n, c, y, x]`` of an NCHW buffer, or of an NCHW[block]c one."""
    return x[n, c // block, y, x_, c % block] if block else x[n, c, y, x_]


def pick(index, table):
    """``table[index]`` for a TIR ``index`` and a short Python list of ints, as a select chain."""
    from tvm import tirx

    expr = tirx.const(int(table[-1]), "int32")
    for position in range(len(table) - 2, -1, -1):
        expr = tirx.Select(index == position, tirx.const(int(table[position]), "int32"), expr)
    return expr


class SparseConv(CPURule):
    """Default schedule of a sparse conv: its element-wise epilogue inlined into the write-out,
    which runs parallel over images × channels and vectorized along the row. The pack and main
    stages carry their own parallel and vector loops."""

    main_block = "sparse_conv_main"

    def schedule_block(self, sch: s_tir.Schedule, block):
        root = sch.get_sblock("root")
        names = [sch.get(b).name_hint for b in sch.get_child_blocks(root)]
        out_index = names.index("sparse_conv_out")
        for name in names[out_index:-1]:  # the write-out and all but the last epilogue stage
            sch.compute_inline(sch.get_sblock(name))
        last = sch.get_sblock(names[-1])
        for name in names[: names.index("sparse_conv_pack")]:  # a fused producer (a relayout): its own stage
            _parallel_vectorized(sch, sch.get_sblock(name))
        _parallel_vectorized(sch, last)
        return sch


def _parallel_vectorized(sch: s_tir.Schedule, block) -> None:
    loops = sch.get_loops(block)
    if len(loops) > 1:
        sch.parallel(sch.fuse(*loops[:-1]))
    sch.vectorize(loops[-1])
