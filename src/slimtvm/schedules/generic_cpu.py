"""Fallback CPU schedule for every PrimFunc no specialised rule takes.

Element-wise, layout-transform, padding, pooling and small reduction kernels are memory-bound.
What matters is to inline chains of element-wise stages (FuseTIR leaves one block per op, each
with a full-size intermediate buffer), run the outer loops in parallel, and vectorize the
innermost loop where it is contiguous. Nothing here is tuned; MetaSchedule can replace it.
"""

from __future__ import annotations

import math

import tvm
import tvm_ffi
from tvm.ir.expr import TensorLoad
from tvm.tirx.analysis import undefined_vars
from tvm.tirx.stmt import BufferStore

from .accumulate_intrin import accumulate_intrin
from .channel_permutation import is_channel_permutation
from .channel_relayout import is_channel_relayout
from .cpu_rule import CPURule
from .stages import MIN_PARALLEL_CHUNKS

MAX_VECTOR = 64  # innermost spatial loops longer than this are split before vectorizing
MAX_WINDOW = 64  # reductions over at most this many elements per output are pooling windows
WINDOW_UNROLL = 8  # outputs of a plain-layout pooling row computed side by side
BORDER_COLUMNS = 2  # outputs split off at each end of a blocked pooling row: covers padding ≤ 2
BLOCK_LANES = 8  # the narrower channel block of 16-lane targets (NCHW8c), which pools also vectorize
MIN_SPLIT_VECTOR = 16  # a vector loop this long or longer gives half of itself to too few chunks
# intrinsics TVM 0.27 lowers for LLVM only as scalars: vectorized, codegen fails ("unknown intrinsic")
SCALAR_ONLY_INTRINSICS = ("cosh", "sinh")


def _scalar_only(stmt) -> bool:
    """Whether the block calls an intrinsic that must stay scalar (see SCALAR_ONLY_INTRINSICS)."""
    text = str(stmt.body)
    return any(f"T.{name}(" in text for name in SCALAR_ONLY_INTRINSICS)


def _is_reduction(sch, block) -> bool:
    """A block with an init or any reduction iterator — also when that iterator has extent 1.

    (dlight's own analysis calls a reduction over unit loops "spatial"; reverse-inlining a bias add
    into such a block then adds the bias twice, once in init and once per update.)
    """
    stmt = sch.get(block)
    return stmt.init is not None or any(int(var.iter_type) != 0 for var in stmt.iter_vars)


def _plain_window(stmt) -> bool:
    """Whether a block is pooling in a plain layout (NCHW): spatial iterators, then reduction
    ones over a window of at most :data:`MAX_WINDOW` elements, the last spatial one (at least
    :data:`WINDOW_UNROLL` long) and a window one indexing the last axis of what it reads (the
    image row; in a blocked layout the last axis is the channel block's lanes). Kept scalar,
    each output's running max is one dependency chain, and a padding stage inlined into it puts
    a bounds check on every read: a 3×3/2 max-pool of 64×112×112 ran 0.41 ms; rows unrolled
    over a separate padded copy 0.14 ms (Zen 5)."""
    spatial = [var for var in stmt.iter_vars if int(var.iter_type) == 0]
    if stmt.init is None or not spatial:
        return False
    window = 1
    for var in stmt.iter_vars[len(spatial) :]:
        if int(var.iter_type) != 2 or not isinstance(var.dom.extent, tvm.tirx.IntImm):
            return False
        window *= int(var.dom.extent)
    row = spatial[-1]
    if not 1 < window <= MAX_WINDOW or not isinstance(row.dom.extent, tvm.tirx.IntImm) or int(row.dom.extent) < WINDOW_UNROLL:
        return False
    window_vars = [var.var for var in stmt.iter_vars[len(spatial) :]]

    def slides_along_row(index) -> bool:  # e.g. w·stride + kw (a channel block's lane index has no window)
        used = undefined_vars(index, [])
        return any(v.same_as(row.var) for v in used) and any(v.same_as(w) for v in used for w in window_vars)

    return any(slides_along_row(read.region[-1].min) for read in stmt.reads)


def _window_combine(stmt) -> str | None:
    """``add`` or ``max`` where a (decomposed) reduction block's update is ``C[i] = C[i] + x[j]``
    or ``max(C[i], x[j])``: a plain load folded into the running value, no conditions (a window
    without padding checks); None otherwise."""
    body = stmt.body
    kinds = {tvm.tirx.Add: "add", tvm.tirx.Max: "max"}
    if not isinstance(body, BufferStore) or type(body.value) not in kinds:
        return None
    running, term = body.value.a, body.value.b
    same_element = (
        isinstance(running, TensorLoad)
        and running.source.same_as(body.buffer)
        and all(tvm_ffi.structural_equal(a, b) for a, b in zip(running.indices, body.indices))
    )
    plain_term = isinstance(term, TensorLoad) and not term.source.same_as(body.buffer)
    return kinds[type(body.value)] if same_element and plain_term else None


def _has_opaque_blocks(sch) -> bool:
    """Whether a block of the function declares no reads and no writes although it has a body
    (TOPI's hand-written kernels: sort, NMS, searchsorted). Their buffer accesses are invisible
    to the schedule, so inlining a producer into them leaves a buffer used before it is defined
    (a NonMaxSuppression model failed to build that way)."""
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        stmt = sch.get(block)
        if not stmt.reads and not stmt.writes and not stmt.iter_vars:
            return True
    return False


def _inline_elementwise(sch) -> list:
    """Inline element-wise blocks into their neighbours (never into a reduction); return the rest."""
    root = sch.get_sblock("root")
    changed = True
    while changed:
        changed = False
        for block in sch.get_child_blocks(root):
            if _is_reduction(sch, block):
                continue
            if any(_plain_window(sch.get(consumer)) for consumer in sch.get_consumers(block)):
                continue  # the padding of a plain-layout pooling stays a stage of its own (_plain_window)
            try:
                sch.compute_inline(block)
                changed = True
                break
            except Exception:  # noqa: BLE001 - not inlinable (an output, or read by a reduction's init)
                pass
            if any(_is_reduction(sch, producer) for producer in sch.get_producers(block)):
                continue
            try:
                sch.reverse_compute_inline(block)
                changed = True
                break
            except Exception:  # noqa: BLE001
                pass
    return list(sch.get_child_blocks(root))


def _halve_for_chunks(sch, parallel: list, vector):
    """Where the ``parallel`` loops offer fewer than :data:`MIN_PARALLEL_CHUNKS` chunks and the
    ``vector`` loop has :data:`MIN_SPLIT_VECTOR` lanes or more (an even count), split it in two
    halves: (the loop over the halves, to run in parallel with the others; the half-width vector
    loop). (None, ``vector``) otherwise. Kernels that meet this are tiny (ResNet-18's global pool
    and the reshapes after it: 512 channels in 32 vectors of 16), and half-width vectors cost them
    nothing measurable, while 64 chunks let 16 threads share them evenly (issue 16)."""
    extents = [sch.get(loop).extent for loop in (*parallel, vector)]
    if not parallel or not all(isinstance(e, tvm.tirx.IntImm) for e in extents):
        return None, vector
    chunks, lanes = math.prod(int(e) for e in extents[:-1]), int(extents[-1])
    if chunks >= MIN_PARALLEL_CHUNKS or lanes < MIN_SPLIT_VECTOR or lanes % 2:
        return None, vector
    half, vector = sch.split(vector, [2, None])
    return half, vector


class GenericCPU(CPURule):
    """dlight rule: inline element-wise chains, parallelize outer loops, vectorize inner ones."""

    def schedule(self, sch):
        try:
            if _has_opaque_blocks(sch) or is_channel_relayout(sch) or is_channel_permutation(sch):
                return None  # TVM's default lowering builds it as written
            self._placed = set()  # names of blocks already scheduled under another block's loops
            for block in _inline_elementwise(sch):
                if sch.get(block).name_hint not in self._placed:
                    self._schedule_block(sch, block)
        except Exception:  # noqa: BLE001 - a structure these steps do not fit (scatter, unpool): leave it to TVM
            return None
        return sch

    def _schedule_block(self, sch, block) -> None:
        loops = sch.get_loops(block)
        stmt = sch.get(block)
        if not loops or len(loops) != len(stmt.iter_vars):
            return  # loops and iterators do not map one to one: leave this block as it is
        if any(isinstance(sch.get(loop).extent, tvm.tirx.IntImm) and int(sch.get(loop).extent) == 0 for loop in loops):
            return  # an empty slice (Phi-3's rotary pass-through when the rotation covers the whole head): no work, and TIR cannot vectorize 0 lanes
        if not _is_reduction(sch, block):
            inner = loops[-1]
            extent = sch.get(inner).extent
            if isinstance(extent, tvm.tirx.IntImm) and int(extent) > MAX_VECTOR and int(extent) % self.lanes == 0:
                _, inner = sch.split(inner, [None, self.lanes])
            _, inner = _halve_for_chunks(sch, sch.get_loops(block)[:-1], inner)
            if isinstance(sch.get(inner).extent, tvm.tirx.IntImm) and int(sch.get(inner).extent) <= MAX_VECTOR and not _scalar_only(stmt):
                try:
                    sch.vectorize(inner)
                except Exception:  # noqa: BLE001 - a loop TIR cannot vectorize stays scalar, still correct
                    pass
            outer = sch.get_loops(block)[:-1]
        else:  # a reduction: parallel over its leading spatial loops only
            outer = []
            for loop, var in zip(loops, stmt.iter_vars):
                if int(var.iter_type) != 0:
                    break
                outer.append(loop)
            vector = self._channel_block_loop(sch, block, outer)
            if vector is not None:  # pooling in a blocked layout: parallel outside, vector inside
                self._schedule_blocked_window(sch, block, outer, vector)
                return
            row = self._window_row_loop(sch, block, outer)
            if row is not None:  # pooling in a plain layout: parallel over rows, unrolled along them
                sch.parallel(sch.fuse(*outer[:-1]) if len(outer) > 2 else outer[0])
                first_reduction = sch.get_loops(block)[1]
                init = sch.decompose_reduction(block, first_reduction)
                sch.vectorize(sch.get_loops(init)[-1])
                _, inner = sch.split(row, [None, WINDOW_UNROLL])
                sch.unroll(inner)
                return
        if outer:
            sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])

    def _schedule_blocked_window(self, sch, block, spatial, vector) -> None:
        """Pooling in a blocked layout (loops: spatial..., window..., channel-block lanes).

        Output rows in parallel (2-D windows; a global mean: its channel blocks), the rows
        outside the channel blocks: the convs on both sides of ResNet's 3×3/2 max-pool split the
        image into bands of rows among the threads (Winograd tiles, :func:`~.stages.
        spatial_partition`), so each core now reads the rows its core wrote; with channel blocks
        outermost each core read every row of its channels, half of them from the other core's
        L2 (session 50, Emerald Rapids, 2 threads, per kernel in the model, builds in turns:
        ResNet-18's 103 → 95 µs, 117 → 101 in another run). Along each row
        the first and last :data:`BORDER_COLUMNS` outputs are loops of their own, so that in the
        interior the padding's column checks are provably true and drop out (the row check
        stays, constant along the row), leaving unrolled vector loads and maxima (LLVM's SLP
        pass packs the unrolled lanes: TIR refuses to vectorize a loop under a reduction).
        Windows without padding checks (max-pools, and average pools through
        lowering/average_pool.py) are one vector add or max per tap (schedules/
        accumulate_intrin.py): unrolled, LLVM had vectorized them across the row's pixels with
        gathers (Bi-Real Net 18's 2×2 average pool 47 → 8 µs, input in cache). One
        loop per output pixel with every check on every tap ran ResNet-18's 3×3/2 max-pool
        (64 × 112 × 112) at 0.19 ms on Zen 4, 1 thread, inputs in cache; this schedule 0.055 ms
        (Bi-Real Net 18 in the model, cold input: 0.40 → 0.24 ms)."""
        # spatial: the leading spatial loops, the last of them the lanes (now inside the window);
        # [batch, channel chunk, row, column, lanes] for a 2-D window, shorter for a global mean
        windowed = len(spatial) >= 5
        leading = spatial[:-2] if windowed else spatial[:-1]
        if windowed:  # rows outside the channel blocks: each core pools the rows its core wrote
            sch.reorder(leading[-1], leading[-2])
            leading = [*leading[:-2], leading[-1], leading[-2]]
        half, vector = _halve_for_chunks(sch, leading, vector)
        if half is not None:  # the loop over the halves moves out of the window, next to the parallel loops
            sch.reorder(half, *sch.get_loops(block)[len(leading) : -2])
            leading = [*leading, half]
        parallel = sch.fuse(*leading) if len(leading) > 1 else leading[0]
        sch.parallel(parallel)
        self._finish_rows_in_place(sch, block, parallel)
        column = spatial[-2] if windowed else None
        columns = int(sch.get(column).extent) if windowed else 0
        parts = [block]
        combine = _window_combine(sch.get(block))  # no padding checks: nothing for border parts to drop
        if columns > 2 * BORDER_COLUMNS and combine is None:  # part sizes; the last part is the rest
            parts = [sch.get_child_blocks(part)[0] for part in sch.loop_partition(column, [BORDER_COLUMNS, columns - 2 * BORDER_COLUMNS])]
        for part in parts:
            loops = sch.get_loops(part)
            first_reduction = loops[len(loops) - len(sch.get(part).iter_vars) + len(spatial) - 1]
            init = sch.decompose_reduction(part, first_reduction)
            sch.vectorize(sch.get_loops(init)[-1])
            lanes = sch.get_loops(part)[-1]
            if combine is not None:  # a vector add or max per tap (accumulate_intrin.py)
                sch.tensorize(lanes, accumulate_intrin(int(sch.get(lanes).extent), str(sch.get(part).writes[0].source.dtype), combine))
            else:  # padding checks: LLVM packs the unrolled lanes into vector maxima
                sch.unroll(lanes)

    def _finish_rows_in_place(self, sch, block, parallel) -> None:
        """An average pool's division (``pool_avg``, its one element-wise consumer) under the
        pool's parallel loop, vectorized: each row is divided while it is in L1, in the same
        parallel region. Bi-Real Net 18's 2×2 average pool of 64 × 56 × 56 (input in cache, Zen 5,
        1 thread): 7.9 µs, 10.0 as a stage of its own."""
        consumers = sch.get_consumers(block)
        if len(consumers) != 1 or _is_reduction(sch, consumers[0]) or len(sch.get_producers(consumers[0])) != 1:
            return
        consumer = consumers[0]
        try:
            sch.reverse_compute_at(consumer, parallel, preserve_unit_loops=True)
        except Exception:  # noqa: BLE001 - a consumer that does not map onto the pool's rows: a stage of its own
            return
        inner = sch.get_loops(consumer)[-1]
        extent = sch.get(inner).extent
        if isinstance(extent, tvm.tirx.IntImm) and int(extent) <= MAX_VECTOR:
            sch.vectorize(inner)
        self._placed.add(sch.get(consumer).name_hint)

    def _window_row_loop(self, sch, block, spatial):
        """Pooling in a plain layout (:func:`_plain_window`): moves the innermost spatial loop
        (along the image row) inside the reduction loops and returns it; None for other blocks."""
        if len(spatial) < 2 or not _plain_window(sch.get(block)):
            return None
        inner = spatial[-1]
        sch.reorder(*sch.get_loops(block)[len(spatial) :], inner)
        return inner

    def _channel_block_loop(self, sch, block, spatial):
        """Pooling in a blocked layout: a reduction whose innermost spatial loop (the channel
        block, a multiple of the SIMD width, or in a 5-D layout of 2-D windows a multiple of 8)
        is followed only by reduction loops. Moves that loop inside the reduction loops and
        returns it (None when the block is not of that shape). 16-lane targets fall back to
        8-channel blocks for a model whose 8·k-channel convs cannot be padded to 16·k
        (lowering/conv_layouts.py, ``model_channel_block``): their pools had fallen to one scalar
        loop over every output value (the light ShuffleNet's 3×3/2 max-pool of 24 × 112 × 112,
        before its depthwise inputs were padded: 284 → 22 µs, 1 thread, Zen 5)."""
        stmt = sch.get(block)
        if len(spatial) < 2 or len(spatial) == len(stmt.iter_vars):
            return None
        inner = spatial[-1]
        extent = sch.get(inner).extent
        if not isinstance(extent, tvm.tirx.IntImm) or int(extent) > MAX_VECTOR:
            return None
        if int(extent) % self.lanes and not (len(spatial) >= 5 and int(extent) % BLOCK_LANES == 0):
            return None
        sch.reorder(*sch.get_loops(block)[len(spatial) :], inner)
        return inner
