"""Direct sparse convolution: NCHW or NCHW[b]c in and out, weights as CSR constants (sparse_weights.py).

The PrimFunc has three stages:

- ``sparse_conv_pack`` (opaque): the input (plain or channel-blocked, whatever layout its
  neighbours chose), zero-padded and phase-split into the flat buffer the offsets index;
- ``sparse_conv_main`` (opaque): per task (a block of ``vector`` virtual output pixels × a
  group of output channels), for each input-channel chunk and output channel, one register
  block of accumulators and, per nonzero weight, a broadcast and ``vector / lanes`` FMAs reading
  the input at ``offset + pixel`` — no im2col, no dense weights;
- ``sparse_conv_out``: the spatial block that drops the spare columns of each row and writes
  the output layout (plain or channel-blocked).

Reading and writing the blocked layout here costs about what a separate relayout would (strided
copies); the lowering keeps chains of sparse k×k convs in plain NCHW, where both are contiguous.

The first two are written as loops (their trip counts come from ``row_ptr``), so MetaSchedule
cannot reshape them (the family is not tunable); the register block and the chunking are
parameters of the layout
(:meth:`SparseConvLayout.choose`, from a sweep of ResNet-18's shapes). The PrimFunc is marked out-element-wise fusable, so
FuseOps fuses the bias, residual add and activation after it; :class:`SparseConv` inlines them
into ``sparse_conv_out``.
"""

from __future__ import annotations

from tvm import s_tir
from tvm.script import tirx as T

from .cpu_rule import CPURule
from .sparse_weights import SparseConvLayout

OUT_EWISE_FUSABLE = 4  # TVM's OpPatternKind kOutEWiseFusable: element-wise consumers fuse into it
COPY_VECTOR = 16  # floats per vector of the input copy
MIN_TASKS = 16  # pixel blocks × channel groups the main stage offers to the thread pool


def _channel_groups(layout: SparseConvLayout) -> int:
    """Output-channel groups so that a small image still gives :data:`MIN_TASKS` tasks."""
    groups = -(-MIN_TASKS // layout.blocks)
    return max(1, min(groups, layout.out_channels // 8))


def _shape(batch: int, channels: int, height: int, width: int, block: int) -> tuple:
    """NCHW, or NCHW[block]c for ``block`` > 0, as int64 dims."""
    dims = (batch, channels, height, width) if not block else (batch, channels // block, height, width, block)
    return tuple(T.int64(d) for d in dims)


def sparse_conv2d_primfunc(layout: SparseConvLayout, batch: int, in_block: int = 0, out_block: int = 0):
    """The PrimFunc ``(x, values [nnz], offsets [nnz], row_ptr, out)`` for ``layout`` and
    ``batch`` images (module doc), for any number ``nnz`` of nonzero weights (a symbolic size:
    layers of one shape share it); ``x`` is NCHW, or NCHW[in_block]c when ``in_block`` > 0,
    and ``out`` likewise with ``out_block``. Refuses channel counts that are not a multiple of
    their block."""
    if (in_block and layout.in_channels % in_block) or (out_block and layout.out_channels % out_block):
        raise ValueError(f"channels {layout.in_channels} → {layout.out_channels} do not fill blocks of {in_block} → {out_block}")
    g = layout.geometry
    n_img, channels, height, width = batch, layout.in_channels, g.height, g.width
    out_channels, out_h, out_w = layout.out_channels, g.out_h, g.out_w
    cols_q, plane, vector = layout.cols_q, layout.plane, layout.vector
    blocks, chunks, size = layout.blocks, layout.chunks, layout.input_size
    channel_stride, shifts, copy_size = layout.channel_stride, layout.shifts, layout.copy_size
    groups = _channel_groups(layout)
    per_group = -(-out_channels // groups)
    slots = len(layout.phases)
    # per stored phase: its row and column phase and the interior (rows, cols) that hold input
    phase_h, phase_w = [ph for ph, _ in layout.phases], [pw for _, pw in layout.phases]
    row0, row1 = zip(*(layout.phase_rows(ph) for ph in phase_h))
    col0, col1 = zip(*(layout.phase_cols(pw) for pw in phase_w))
    i64 = T.int64

    @T.prim_func(s_tir=True, private=True)
    def sparse_conv2d(
        x: T.Buffer(_shape(n_img, channels, height, width, in_block), "float32"),
        values_handle: T.handle,
        offsets_handle: T.handle,
        row_ptr: T.Buffer((i64(chunks * out_channels + 1),), "int32"),
        out: T.Buffer(_shape(n_img, out_channels, out_h, out_w, out_block), "float32"),
    ):
        T.func_attr({"op_pattern": OUT_EWISE_FUSABLE, "tirx.noalias": True})
        nnz = T.int64()
        values = T.match_buffer(values_handle, (nnz,), "float32")
        offsets = T.match_buffer(offsets_handle, (nnz,), "int32")
        packed = T.sblock_alloc_buffer((n_img, size), "float32")
        virtual = T.sblock_alloc_buffer((n_img, out_channels, blocks * vector), "float32")
        with T.sblock("sparse_conv_pack"):
            T.reads(whole(x))
            T.writes(packed[0:n_img, 0:size])
            for n in range(n_img):
                for shift in T.unroll(shifts):  # copy `shift` holds the plane shifted left by `shift` floats
                    for slot in T.unroll(slots):
                        for c in T.parallel(channels):
                            base = shift * copy_size + slot * plane + c * channel_stride
                            first = T.max(pick(slot, col0) - shift, 0)
                            length = T.max(pick(slot, col1) - shift - first, 0)
                            # zeros where the taps of real outputs read padding: whole rows above and
                            # below the image, and each image row's columns left and right of it
                            for t in range(pick(slot, row0) * cols_q):
                                packed[n, base + t] = T.float32(0)
                            for t in range(channel_stride - pick(slot, row1) * cols_q):
                                packed[n, base + pick(slot, row1) * cols_q + t] = T.float32(0)
                            for i in range(pick(slot, row1) - pick(slot, row0)):
                                row = pick(slot, row0) + i
                                for j in range(first):
                                    packed[n, base + row * cols_q + j] = T.float32(0)
                                for j in range(cols_q - first - length):
                                    packed[n, base + row * cols_q + first + length + j] = T.float32(0)
                                for jb in range(length // COPY_VECTOR):  # the interior, in whole vectors, then the rest
                                    for jv in T.vectorized(COPY_VECTOR):
                                        packed[n, base + row * cols_q + first + jb * COPY_VECTOR + jv] = read(
                                            x,
                                            n,
                                            c,
                                            row * g.stride_h + pick(slot, phase_h) - g.top,
                                            (first + jb * COPY_VECTOR + jv + shift) * g.stride_w + pick(slot, phase_w) - g.left,
                                            in_block,
                                        )
                                for jt in range(length % COPY_VECTOR):
                                    packed[n, base + row * cols_q + first + length - length % COPY_VECTOR + jt] = read(
                                        x,
                                        n,
                                        c,
                                        row * g.stride_h + pick(slot, phase_h) - g.top,
                                        (first + length - length % COPY_VECTOR + jt + shift) * g.stride_w + pick(slot, phase_w) - g.left,
                                        in_block,
                                    )
                    for t in range(copy_size - slots * plane):  # the spare reads of the last block
                        packed[n, shift * copy_size + slots * plane + t] = T.float32(0)
        with T.sblock("sparse_conv_main"):
            T.reads(packed[0:n_img, 0:size], values[0:nnz], offsets[0:nnz], row_ptr[0 : chunks * out_channels + 1])
            T.writes(virtual[0:n_img, 0:out_channels, 0 : blocks * vector])
            for n in range(n_img):
                for task in T.parallel(blocks * groups):
                    acc = T.alloc_buffer((vector,), "float32", scope="local")
                    for chunk in range(chunks):
                        for o_in in range(per_group):
                            if (task % groups) * per_group + o_in < out_channels:
                                o = (task % groups) * per_group + o_in
                                pixel = (task // groups) * vector
                                row = chunk * out_channels + o
                                for v in T.vectorized(vector):
                                    acc[v] = T.if_then_else(chunk == 0, T.float32(0), virtual[n, o, pixel + v])
                                for k in range(row_ptr[row + 1] - row_ptr[row]):
                                    for v in T.vectorized(vector):
                                        acc[v] = acc[v] + values[row_ptr[row] + k] * packed[n, offsets[row_ptr[row] + k] + pixel + v]
                                for v in T.vectorized(vector):
                                    virtual[n, o, pixel + v] = acc[v]
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
