"""fp32 dense / matmul ``out[..., i, j] = Σ_k x[..., i, k] · w[..., k, j]`` (Relax's legalized
``matmul``): CPU schedule.

Many rows (a transformer's tokens, an attention's queries, a big batch) make it a matrix product
(**GEMM form**): each task owns a register tile of ``rows`` rows × ``vectors`` SIMD vectors of
columns, the reduction runs outside the tile, so the accumulators stay in registers while each
value of ``x`` is broadcast once per tile row and each vector of ``w`` loaded once per tile
(DeiT-Tiny's 197 × 192 × 576 product: 123 G multiply-adds/s at 1 thread on Zen 5, 86% of the
core's peak; TVM's generic schedule ran it 60× slower). The tile is the one the target's
registers hold (:func:`gemm_register_tiles`); rows that do not fill the last tile are left out by
a predicate on whole rows, which keeps the vector code. With fewer rows than columns and a large
packed weight (lowering/packed_matmuls.py), each column group prefetches the next group's panels
and the row tiles cover the rows exactly (:func:`prefetches_next_group`).

Classifier layers run at batch 1, so this is a matrix-vector product bound by reading ``w``
once (from DRAM: the layers before it have evicted it), and ``w`` should be read in long
contiguous runs. With a constant weight, packed in column panels one vector wide
(lowering/packed_matmuls.py), the **panel form** (:func:`schedule_panel_matvec`): a task owns a
tile of ``vectors`` panels and one of ``segments`` ranges of the reduction, keeps its rows ×
``vectors`` accumulators in registers down the range (each panel one sequential stream), and
writes one partial row; a short final pass adds the segments' partial rows and runs the epilogue
(AMD Zen 4, 1 / 2 threads, the 1280 × 1000 classifier alone, weights warm: 74 → 55 µs / 68 → 36
against split-K below; read from memory: 288 → 165–179 / 203 → 103). Without packing, two forms:

- **split-K** (few rows, an accumulator row that fits in L1): ``k_tasks`` parallel tasks each
  own a contiguous range of ``w``'s rows — whole rows, so every task streams one contiguous
  block of memory — and sum them into a partial row; a short final pass adds the partial rows
  and runs the fused epilogue. Reading whole rows matters: column tiles read ``w`` in runs of a
  few hundred bytes at a 4 KB stride, which the hardware prefetchers follow badly (MobileNetV2's
  1280 × 1000 classifier: 0.48 ms with 336-column tiles, 0.28 ms split-K; AMD Zen 4, 1 thread).
- **column tiles**: a task owns ``col_tile`` output columns (an accumulator row in L1) ×
  ``row_tile`` rows of ``x``, for batches and wide layers.

Either way each group of ``k_unroll`` rows of ``w`` is swept one SIMD vector at a time (load
accumulator, ``k_unroll`` multiply-adds, store).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import tvm
import tvm_ffi
from tvm import s_tir
from tvm.ir.expr import TensorLoad

from .cpu_rule import CPURule
from .stages import MIN_ACCUMULATORS, MIN_PARALLEL_CHUNKS, categorical, fewest_parts, split_stages

MATMUL_BLOCK = "matmul"


SPLIT_K_MAX_ROWS = 4
# From here on (or with batch axes) the GEMM form; fewer rows: split-K, which streams a classifier's
# cold weights in whole rows (the register tiles read column panels at a 4 KB stride). Zen 5, a
# 512 × 1000 classifier alone (weights warm), 1 thread, before → after the GEMM form: 5 rows 0.09 →
# 0.03 ms, 8 rows 0.08 → 0.04 (column tiles before), 32 rows 0.29 → 0.14 (onnxruntime 0.13).
GEMM_MIN_ROWS = SPLIT_K_MAX_ROWS + 1
SPLIT_K_MAX_ACCUMULATOR_BYTES = 16 * 1024  # rows × cols partial sums per task, kept in L1
SPLIT_K_MAX_TASKS = MIN_PARALLEL_CHUNKS  # see split_k_tasks
SPLIT_K_MIN_ROWS_PER_TASK = 8


@dataclass(frozen=True)
class DenseTile:
    """``row_tile`` rows × ``col_tile`` columns per task; the reduction unrolled by ``k_unroll``.
    ``k_tasks`` > 0 selects the split-K form (``row_tile`` and ``col_tile`` unused)."""

    row_tile: int
    col_tile: int
    k_unroll: int
    k_tasks: int = 0


def split_k_tasks(rows: int, cols: int, reduction: int, lanes: int) -> int:
    """How many row ranges of ``w`` split-K uses (the largest divisor of ``reduction`` up to
    ``SPLIT_K_MAX_TASKS`` leaving ≥ ``SPLIT_K_MIN_ROWS_PER_TASK`` rows each), or 0 where the
    column-tile form fits better: many rows, columns not a whole number of vectors, or a
    partial row too large for L1.

    Up to 64 tasks (:data:`MIN_PARALLEL_CHUNKS`: four per thread at 16 threads; the final pass
    runs in parallel over the output vectors too). Session 21 on Zen 4, ResNet-18's 512 × 1000
    classifier in the model (``benchmarks/profile_kernels.py --threads 1,2``, µs at 1 / 2
    threads, runs of one build moving by ±10): 8 tasks 105–112 / 74–77, 16 tasks 107–115 / 66–77,
    64 tasks 116–121 / 84–91. The kernel waits on memory (2 MB of weights, evicted by the convs
    before it), so 64 costs about 10 µs (0.1% of the model) for chunks a 16-core machine can
    share; 16 tasks × 7 column ranges instead ran slower at 1 thread (column runs of 576 bytes at
    a 4 KB stride, as the module docstring warns). Before session 21: 8 tasks (they beat 2, 4
    and 16 on the 1280 × 1000 classifier, 1 thread)."""
    if rows > SPLIT_K_MAX_ROWS or cols % lanes or rows * cols * 4 > SPLIT_K_MAX_ACCUMULATOR_BYTES:
        return 0
    fitting = [d for d in range(1, SPLIT_K_MAX_TASKS + 1) if reduction % d == 0 and reduction // d >= SPLIT_K_MIN_ROWS_PER_TASK]
    return max(fitting) if fitting else 0


def default_dense_tile(rows: int, cols: int, reduction: int, lanes: int) -> DenseTile:
    """Split-K where :func:`split_k_tasks` allows it, with ``k`` unrolled by 8 when it divides
    the task's rows. Otherwise column ranges of at most half the columns (two tasks or more), a
    multiple of ``lanes`` dividing ``cols`` when one exists; up to 4 rows dividing ``rows``;
    ``k`` unrolled by 4 when it divides."""
    k_tasks = split_k_tasks(rows, cols, reduction, lanes)
    if k_tasks:
        per_task = reduction // k_tasks
        return DenseTile(rows, cols, max(u for u in (1, 2, 4, 8) if per_task % u == 0), k_tasks)
    divisors = [c for c in range(lanes, cols // 2 + 1, lanes) if cols % c == 0]
    col_tile = max(divisors) if divisors else cols
    row_tile = max(d for d in range(1, min(4, rows) + 1) if rows % d == 0)
    k_unroll = 4 if reduction % 4 == 0 else 1
    return DenseTile(row_tile, col_tile, k_unroll)


def schedule_dense(sch: s_tir.Schedule, lanes: int, row_tile=1, col_tile=8, k_unroll=1) -> None:
    """Apply the schedule of the module docstring; factors are ints or MetaSchedule variables."""
    stages = split_stages(sch, MATMUL_BLOCK)
    matmul, out = stages.main, stages.out

    rows, cols = sch.get_loops(out)
    rows_outer, rows_inner = sch.split(rows, [None, row_tile])
    cols_outer, cols_inner = sch.split(cols, [None, col_tile])
    sch.reorder(rows_outer, cols_outer, rows_inner, cols_inner)
    sch.parallel(sch.fuse(rows_outer, cols_outer))
    sch.vectorize(cols_inner)
    sch.compute_at(matmul, sch.get_loops(out)[0], preserve_unit_loops=True)
    tile_rows, tile_cols, k = sch.get_loops(matmul)[-3:]
    k_outer, k_inner = sch.split(k, [None, k_unroll])
    cols_vectors, vector = sch.split(tile_cols, [None, lanes])
    sch.reorder(k_outer, tile_rows, cols_vectors, k_inner, vector)
    sch.unroll(k_inner)
    sch.vectorize(vector)
    sch.decompose_reduction(matmul, k_outer)


def schedule_dense_split_k(sch: s_tir.Schedule, lanes: int, k_tasks=8, k_unroll=8) -> None:
    """The split-K form of the module docstring; factors are ints or MetaSchedule variables."""
    stages = split_stages(sch, MATMUL_BLOCK)
    matmul, out = stages.main, stages.out
    reduction = sch.get_loops(matmul)[-1]
    task, _ = sch.split(reduction, [k_tasks, None])
    partial = sch.rfactor(task, 0)  # partial[task, i, j] = Σ over the task's rows of w
    rows, cols, task, k = sch.get_loops(partial)
    k_outer, k_inner = sch.split(k, [None, k_unroll])
    vectors, vector = sch.split(cols, [None, lanes])
    sch.reorder(task, k_outer, rows, vectors, k_inner, vector)
    sch.parallel(task)
    sch.unroll(k_inner)
    sch.vectorize(vector)
    sch.decompose_reduction(partial, k_outer)
    _sum_partial_rows(sch, matmul, out, lanes)


# The panel form (schedule_panel_matvec): tiles of this many panels, the first that divides the
# panels and keeps rows × vectors accumulators in registers (panel_accumulators); the reduction
# in as few segments as give MIN_PARALLEL_CHUNKS chunks, each at least PANEL_MIN_SEGMENT long.
# Zen 4, 1280 × 1008 alone, 1 thread, warm (µs): 1 panel 64–86, 3 panels 55, 7 panels 56; the
# segments (1–8) changed nothing at 1 thread.
PANEL_VECTORS = (4, 3, 5, 6, 7, 8, 2, 1)
PANEL_MIN_SEGMENT = 32


def panel_accumulators(lanes: int) -> int:
    """The accumulators a register tile may hold: 24 of AVX-512's 32 vector registers, 12 of
    AVX2's and NEON's 16 (as :func:`gemm_register_tiles`)."""
    return 24 if lanes >= 16 else 12


def default_panel_tile(rows: int, cols: int, reduction: int, lanes: int) -> tuple[int, int]:
    """``(vectors, segments)`` of the panel form for a product of ``rows`` × ``reduction`` ×
    ``cols`` (``cols`` a whole number of ``lanes``-wide panels): the first of
    :data:`PANEL_VECTORS` that divides the panels with ``rows × vectors`` accumulators that fit,
    and the fewest segments of at least :data:`PANEL_MIN_SEGMENT` reductions dividing the
    reduction that make :data:`MIN_PARALLEL_CHUNKS` chunks with the tiles (the most such
    segments where none does)."""
    panels = cols // lanes
    vectors = next((v for v in PANEL_VECTORS if panels % v == 0 and rows * v <= panel_accumulators(lanes)), 1)
    tiles = panels // vectors
    segments = [d for d in range(1, reduction + 1) if reduction % d == 0 and reduction // d >= PANEL_MIN_SEGMENT] or [1]
    return vectors, next((d for d in segments if tiles * d >= MIN_PARALLEL_CHUNKS), segments[-1])


def schedule_panel_matvec(sch: s_tir.Schedule, lanes: int, vectors=3, segments=4) -> None:
    """The panel form of the module docstring for a matmul by a packed weight ``[N / P, K, P]``
    (P = ``lanes``) with few rows: parallel over (tile of ``vectors`` panels, segment of the
    reduction); the tile's rows × vectors accumulators stay in registers down the segment, whose
    partial row is then written; the final pass adds the partial rows (:func:`_sum_partial_rows`).
    Factors are ints or MetaSchedule variables. Refuses (TVM raises) columns that are not a whole
    number of ``vectors`` panels."""
    stages = split_stages(sch, MATMUL_BLOCK)
    matmul, out = stages.main, stages.out
    segment, _ = sch.split(sch.get_loops(matmul)[-1], [segments, None])
    partial = sch.rfactor(segment, 0)  # partial[segment, i, j] = Σ over the segment's reductions
    rows, cols, segment, k = sch.get_loops(partial)
    tiles, tile_vectors, vector = sch.split(cols, [None, vectors, lanes])
    sch.reorder(tiles, segment, k, rows, tile_vectors, vector)
    sch.parallel(sch.fuse(tiles, segment))
    sch.unroll(rows)
    sch.unroll(tile_vectors)
    sch.vectorize(vector)
    sch.decompose_reduction(partial, k)
    _sum_partial_rows(sch, matmul, out, lanes)


def _sum_partial_rows(sch: s_tir.Schedule, matmul, out, lanes: int) -> None:
    """The final pass of split-K and the panel form: per output vector (parallel over the rows and
    the vectors: half vectors where whole ones give fewer than :data:`MIN_PARALLEL_CHUNKS`), add
    the tasks' partial rows, then the epilogue."""
    *rows, cols = sch.get_loops(out)
    columns = int(sch.get(cols).extent)
    final_lanes = lanes // 2 if columns // lanes < MIN_PARALLEL_CHUNKS and lanes > 4 else lanes
    out_vectors, out_vector = sch.split(cols, [None, final_lanes])
    parallel = sch.fuse(*rows, out_vectors)
    sch.parallel(parallel)
    sch.vectorize(out_vector)
    sch.compute_at(matmul, parallel, preserve_unit_loops=True)
    sch.vectorize(sch.get_loops(matmul)[-1])


@dataclass(frozen=True)
class GemmTile:
    """The GEMM form's register tile, ``rows`` × ``vectors`` SIMD vectors, and the parallel
    ``column_groups`` the column tiles are dealt into (see :func:`default_gemm_tile`)."""

    rows: int
    vectors: int
    column_groups: int = 1


def gemm_register_tiles(lanes: int) -> list[tuple[int, int]]:
    """(rows, vectors) register tiles, best first, that leave registers for the vectors of ``w``
    and the broadcast value: 24 accumulators of AVX-512's 32, 12 of AVX2's (and NEON's) 16.
    Zen 5, 197 × 192 × 576 at 1 thread (µs): AVX-512 6 × 4 177, 8 × 3 177, 14 × 2 184, 28 × 1
    199, 7 × 4 400 (28 accumulators and 4 weight vectors: spills); AVX2 code 6 × 2 325, 4 × 3
    312, 12 × 1 355, 3 × 4 619 (spills)."""
    if lanes >= 16:
        return [(6, 4), (8, 3), (12, 2), (24, 1)]
    return [(6, 2), (4, 3), (12, 1)]


def default_gemm_tile(batch: int, rows: int, cols: int, lanes: int, reduction: int = 0, whole_rows: bool = False) -> GemmTile:
    """The first register tile of :func:`gemm_register_tiles` whose vectors divide the columns'
    vectors (columns that are not whole vectors: one vector wide), its rows capped at ``rows``;
    column tiles dealt into the fewest groups that make :data:`MIN_PARALLEL_CHUNKS` chunks with
    the batch and the row tiles (one group when the columns leave a partial vector), and into
    more where a group's panel of ``w`` (``reduction`` × its columns) would exceed
    :data:`GEMM_PANEL_BYTES`: every row tile of a chunk reads its group's whole panel again.
    ``whole_rows`` (a product that prefetches, :func:`prefetches_next_group`): the first register
    tile with rows, from half its own up, that divide the rows (:func:`whole_row_tile`) and still
    :data:`~.stages.MIN_ACCUMULATORS` accumulators, where one has them."""
    vectors_total = cols // lanes
    fitting = [(min(r, rows), v) for r, v in gemm_register_tiles(lanes) if vectors_total and vectors_total % v == 0]
    tile_rows, vectors = fitting[0] if fitting else (1, 1)
    if whole_rows:  # the first register tile with a whole-row form (49 rows: 7 × 3 where 6 × 4 has none)
        whole = [(whole_row_tile(rows, r), v) for r, v in fitting]
        tile_rows, vectors = next(((r, v) for r, v in whole if rows % r == 0 and r * v >= MIN_ACCUMULATORS), (tile_rows, vectors))
    groups = 1
    if cols % lanes == 0:
        tiles = vectors_total // vectors
        groups = fewest_parts(tiles, batch * -(-rows // tile_rows))
        groups = next((g for g in range(groups, tiles + 1) if tiles % g == 0 and 4 * reduction * cols // g <= GEMM_PANEL_BYTES), tiles)
    return GemmTile(tile_rows, vectors, groups)


# A column group's panel of w that its row tiles read in turn, kept well inside a 1–2 MB L2
# with the rows of x and the output. Emerald Rapids (2 MB L2), 1 thread, one matmul alone (G
# multiply-adds/s, onnxruntime 95–99): Swin-T's 196 × 384 → 1536 (2 groups: 1.2 MB panels) 72 →
# 96, its 196 × 1536 → 384 79 → 99. (Weight rows 4 KB apart thrash the caches however small the
# panel: lowering/pad_channels.py widens those.)
GEMM_PANEL_BYTES = 512 * 1024


def schedule_gemm(sch: s_tir.Schedule, lanes: int, tile_rows: int, vectors: int, column_groups: int = 1) -> None:
    """The GEMM form of the module docstring: a parallel chunk per (batch, row tile, column
    group), the column tiles of its group in turn, each computed with the reduction outside the
    unrolled ``tile_rows`` × ``vectors`` register tile and then written through the epilogue.
    Factors are ints or MetaSchedule variables."""
    stages = split_stages(sch, MATMUL_BLOCK)
    matmul, out = stages.main, stages.out
    if _columns(sch, out) != _columns(sch, matmul):
        # the columns were padded to whole vectors and the epilogue slices them back (a classifier
        # of 1000 classes at batch 32): the product writes every padded column, the slice and the
        # epilogue run after it on vectors that divide the remaining columns
        _schedule_slice(sch, out, lanes)
        out = sch.cache_write(matmul, 0, "global")
    *batch, rows, cols = sch.get_loops(out)
    rows_first = _extent(sch, rows) >= _extent(sch, cols)
    rows_outer, rows_inner = sch.split(rows, [None, tile_rows])
    columns, column_vectors, vector = sch.split(cols, [None, vectors, lanes])
    group, column_tile = sch.split(columns, [column_groups, None])
    if not rows_first:
        # fewer rows than columns (tokens × a weight matrix): one thread's consecutive chunks share
        # a column group, so its panel of w stays in L2 while the row tiles pass over it.
        # With cold weights the group's first row tile waits on memory: every (row tile, column
        # tile) of a group prefetches a share of the next group's panels (prefetches_next_group).
        # Session 41's attempt at it prefetched the accumulator's address (a 3-D buffer, like the
        # packed weight) and ran 1.8x slower; fixed in session 42, where the row tiles also had to
        # cover the rows exactly (see prefetches_next_group) and the panels became one vector wide
        # (lowering/packed_matmuls.py). Emerald Rapids, builds in turns, 1 / 2 threads, a chain of
        # eight 40 × 512 → 1376 → 512 products: the 512 → 1376 products 634 → 456–480 µs / 420 →
        # 323–328 with the prefetch (one-vector panels before and after). Row panels (k blocks of
        # 128 or 64) for this 512-long reduction: 646 → 648–673 µs; weights on 2 MB pages
        # (glibc.malloc.hugetlb=1, both engines): no change (session 41).
        sch.reorder(*batch, group, rows_outer, column_tile, rows_inner, column_vectors, vector)
        sch.parallel(sch.fuse(*batch, group, rows_outer))
        prefetch = lanes >= 8 and isinstance(vectors, int) and prefetches_next_group(sch, matmul, tile_rows)
    else:
        sch.reorder(*batch, rows_outer, group, column_tile, rows_inner, column_vectors, vector)
        sch.parallel(sch.fuse(*batch, rows_outer, group))
        prefetch = False
    sch.unroll(rows_inner)
    sch.unroll(column_vectors)
    sch.vectorize(vector)
    sch.compute_at(matmul, column_tile, preserve_unit_loops=True)
    tile_rows_loop, tile_cols, reduction = sch.get_loops(matmul)[-3:]
    tile_vectors, tile_vector = sch.split(tile_cols, [None, lanes])
    if prefetch:
        reduction, steps = sch.split(reduction, [None, PREFETCH_STEPS])
        rows = int(sch.get(matmul).writes[0].source.shape[-2])
        sch.annotate(reduction, GROUP_PREFETCH_ANNOTATION, [tile_rows, vectors * lanes, rows // tile_rows])
        sch.annotate(reduction, COLUMN_GROUPS_ANNOTATION, column_groups)
        sch.reorder(reduction, steps, tile_rows_loop, tile_vectors, tile_vector)
    else:
        sch.reorder(reduction, tile_rows_loop, tile_vectors, tile_vector)
    sch.unroll(tile_rows_loop)
    sch.unroll(tile_vectors)
    sch.vectorize(tile_vector)
    sch.decompose_reduction(matmul, reduction)


# The next-column-group prefetch (lowering/weight_prefetch.py reads the annotations): in the GEMM
# form with fewer rows than columns, a column group's panels of w are read from memory by its
# first row tile and from L2 by the others; every (row tile, column tile) of a group prefetches an
# equal share of the next group's panels, a few lines every PREFETCH_STEPS reduction steps.
GROUP_PREFETCH_ANNOTATION = "slimtvm.prefetch_next_column_group"  # [tile rows, tile columns, row tiles]
COLUMN_GROUPS_ANNOTATION = "slimtvm.column_groups"  # the column groups (an int, or MetaSchedule's sample)
PREFETCH_STEPS = 16
GROUP_PREFETCH_MIN_BYTES = 512 * 1024  # smaller weights stay in L2 from one run to the next


def packed_weight(block):
    """The packed weight ``[N / P, K, P]`` (lowering/packed_matmuls.py) that a matmul block reads:
    the load indexed by the block's reduction in its middle axis; None for a plain ``[K, N]``
    weight (whose reduction axis comes first) or a product of two activations."""
    reduction = next((iv.var for iv in block.iter_vars if iv.iter_type == tvm.tirx.IterVar.CommReduce), None)
    loads = []
    tvm_ffi.structural_walk(block.body, lambda node: loads.append(node) if isinstance(node, TensorLoad) else None)
    return next(
        (load.source for load in loads if len(load.indices) == 3 and isinstance(load.indices[1], tvm.tirx.Var) and load.indices[1].same_as(reduction)),
        None,
    )


def prefetchable_weight(sch, matmul) -> bool:
    """Whether the matmul reads a packed weight of at least :data:`GROUP_PREFETCH_MIN_BYTES`
    whose reduction is whole :data:`PREFETCH_STEPS`."""
    weight = packed_weight(sch.get(matmul))
    if weight is None:
        return False
    shape = [int(d) for d in weight.shape]
    return 4 * math.prod(shape) >= GROUP_PREFETCH_MIN_BYTES and shape[1] % PREFETCH_STEPS == 0


def prefetches_next_group(sch, matmul, tile_rows) -> bool:
    """Whether the GEMM form (fewer rows than columns) gets the next-column-group prefetch: a
    packed weight of at least :data:`GROUP_PREFETCH_MIN_BYTES`, a reduction of whole
    :data:`PREFETCH_STEPS`, and row tiles that cover the rows exactly. A partial row tile leaves
    a predicate on its rows, and with the prefetch loop in the reduction LLVM no longer makes a
    copy of the loop without it (as it does otherwise): 8 of a 12 × 2 tile's rows then
    accumulated in memory and Llama's 40 × 512 → 1376 products ran 1.45× slower (session 42).
    x86 only (the caller checks the lanes): NEON's tiles are not measured with it."""
    rows = int(sch.get(matmul).writes[0].source.shape[-2])
    return isinstance(tile_rows, int) and rows % tile_rows == 0 and prefetchable_weight(sch, matmul)


def whole_row_tile(rows: int, tile_rows: int) -> int:
    """The most rows per tile, from half of ``tile_rows`` up to it, that divide ``rows`` (40
    rows: 10 for a 12-row tile, 5 for a 6-row one); ``tile_rows`` where none does."""
    return next((r for r in range(min(tile_rows, rows), (tile_rows + 1) // 2 - 1, -1) if r > 0 and rows % r == 0), tile_rows)


# The row-panel form (schedule_gemm_row_panel): products of at most this many rows (a decoder's or
# encoder's prompt of tens of tokens) whose column tiles alone make this many chunks
# and whose reduction is long enough that a column panel of w (reduction × a tile's vectors) no longer
# stays in L2 between row tiles; shorter ones keep the GEMM form (a 4-layer Llama's 512-long
# products ran 1.15× slower as row panels in the model, with cold weights, though alone no slower).
# Since session 42 a product that prefetches the next column group (x86, whole row tiles) keeps the
# GEMM form however long its reduction (Dense.schedule_block).
ROW_PANEL_MAX_ROWS = 72
ROW_PANEL_MIN_CHUNKS = 8
ROW_PANEL_MIN_REDUCTION = 1024
ROW_PANEL_K_BLOCKS = (128, 256, 192, 160, 96, 64)  # reduction blocks tried in order: the first that divides


def row_panel_k_block(reduction: int) -> int:
    """The reduction block of the row-panel form: the first of :data:`ROW_PANEL_K_BLOCKS` that
    divides ``reduction``, else its largest divisor from 64 to 256 (Llama's 1376: 172), else the
    whole reduction."""
    preferred = next((block for block in ROW_PANEL_K_BLOCKS if reduction % block == 0 and reduction > block), None)
    if preferred is not None:
        return preferred
    return next((block for block in range(min(256, reduction - 1), 63, -1) if reduction % block == 0), reduction)


def uses_row_panel(batch: int, rows: int, cols: int, reduction: int, lanes: int, vectors: int) -> bool:
    """Whether a GEMM-form product runs as row panels (:func:`schedule_gemm_row_panel`): few rows,
    a long reduction that :data:`ROW_PANEL_K_BLOCKS` divides, whole vectors of columns and enough
    column tiles for the chunks."""
    if rows > ROW_PANEL_MAX_ROWS or reduction < ROW_PANEL_MIN_REDUCTION or row_panel_k_block(reduction) == reduction:
        return False
    return cols % (lanes * vectors) == 0 and batch * cols // (lanes * vectors) >= ROW_PANEL_MIN_CHUNKS


def schedule_gemm_row_panel(sch: s_tir.Schedule, lanes: int, tile_rows: int, vectors: int, k_block: int) -> None:
    """The GEMM form for few rows: a parallel chunk per (batch, column tile) that computes every
    row of it — for each block of ``k_block`` reductions, all row tiles in turn — so the block of
    ``w``'s column panel (``k_block`` × ``vectors`` SIMD vectors, 32 KB at 128 × 4 × 16 floats)
    stays in L1 while every row tile reads it, instead of the whole panel coming back from L2 or
    L3 once per row tile (GPT-2's 40 × 3072 × 768 product: its panel is 786 KB). Zen 5, 1 / 2
    threads, warm weights: 40 × 3072 × 768 965 → 728 µs / 595 → 390 (onnxruntime 800 / 400),
    40 × 768 × 3072 872 → 790 / 498 → 402 (770 / 400). The accumulators go through the output
    tile (``rows`` × ``vectors`` vectors, in L1) between reduction blocks. Refuses (as
    :func:`schedule_gemm`'s caller decides) products whose epilogue slices columns."""
    stages = split_stages(sch, MATMUL_BLOCK)
    matmul, out = stages.main, stages.out
    *batch, rows, cols = sch.get_loops(out)
    rows_outer, rows_inner = sch.split(rows, [None, tile_rows])
    column_tile, column_vectors, vector = sch.split(cols, [None, vectors, lanes])
    sch.reorder(*batch, column_tile, rows_outer, rows_inner, column_vectors, vector)
    chunk = sch.fuse(*batch, column_tile) if batch else column_tile
    sch.parallel(chunk)
    sch.unroll(rows_inner)
    sch.unroll(column_vectors)
    sch.vectorize(vector)
    sch.compute_at(matmul, chunk, preserve_unit_loops=True)
    matmul_rows, matmul_cols, reduction = sch.get_loops(matmul)[-3:]
    row_tiles, tile_row = sch.split(matmul_rows, [None, tile_rows])
    tile_vectors, tile_vector = sch.split(matmul_cols, [None, lanes])
    k_outer, k_inner = sch.split(reduction, [None, k_block])
    sch.reorder(k_outer, row_tiles, k_inner, tile_row, tile_vectors, tile_vector)
    sch.unroll(tile_row)
    sch.unroll(tile_vectors)
    sch.vectorize(tile_vector)
    sch.decompose_reduction(matmul, k_outer)


def _extent(sch, loop) -> int:
    extent = sch.get(loop).extent
    return int(extent) if isinstance(extent, tvm.tirx.IntImm) else 0


def _slices_columns(sch) -> bool:
    """Whether the epilogue writes fewer columns than the product (padded columns sliced back);
    reads the blocks, changes nothing."""
    last = sch.get_child_blocks(sch.get_sblock("root"))[-1]
    return _columns(sch, last) != _columns(sch, sch.get_sblock(MATMUL_BLOCK))


def _columns(sch, block) -> int:
    return int(sch.get(block).writes[0].source.shape[-1])


def _schedule_slice(sch: s_tir.Schedule, block, lanes: int) -> None:
    """An element-wise stage over ``[..., rows, columns]``: rows in parallel, columns in the
    widest vectors (up to ``lanes``) that divide them."""
    *outer, cols = sch.get_loops(block)
    sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])
    extent = int(sch.get(cols).extent)
    width = next(w for w in (lanes, lanes // 2, lanes // 4, 1) if w >= 1 and extent % w == 0)
    if width > 1:
        _, vector = sch.split(cols, [None, width])
        sch.vectorize(vector)


def matmul_shape(sch, block) -> tuple[int, int, int, int] | None:
    """(batch, rows, columns, reduction) of a block that is Relax's legalized ``matmul`` — any
    number of batch axes (their product), then rows, columns, and one reduction, each with its
    own loop — or None for any other block."""
    iter_types = [int(var.iter_type) for var in sch.get(block).iter_vars]
    loops = sch.get_loops(block)
    if len(iter_types) < 3 or any(t != 0 for t in iter_types[:-1]) or iter_types[-1] == 0 or len(loops) != len(iter_types):
        return None
    extents = [sch.get(loop).extent for loop in loops]
    if not all(isinstance(extent, tvm.tirx.IntImm) for extent in extents):
        return None
    *batch, rows, cols, reduction = (int(extent) for extent in extents)
    return math.prod(batch), rows, cols, reduction


def uses_gemm_form(sch, block) -> bool:
    """Whether a matmul block runs the GEMM form: batch axes, or at least :data:`GEMM_MIN_ROWS`
    rows."""
    batch, rows, _, _ = matmul_shape(sch, block)
    return len(sch.get_loops(block)) > 3 or rows >= GEMM_MIN_ROWS


class Dense(CPURule):
    """dlight rule: schedules a PrimFunc whose main block is Relax's legalized ``matmul``."""

    main_block = MATMUL_BLOCK

    def accepts(self, sch, block) -> bool:
        return matmul_shape(sch, block) is not None

    def schedule_block(self, sch, block):
        batch, rows, cols, reduction = matmul_shape(sch, block)
        if uses_gemm_form(sch, block):
            whole_rows = self.lanes >= 8 and rows < cols and prefetchable_weight(sch, block)
            tile = default_gemm_tile(batch, rows, cols, self.lanes, reduction, whole_rows=whole_rows)
            # a product that prefetches the next column group runs the GEMM form even where row
            # panels would take it: Emerald Rapids, builds in turns, 1 / 2 threads, GPT-2's 40 ×
            # 3072 → 768 products 0.88–0.91 / 0.84–0.96 of the row panels' time, Llama's 40 ×
            # 1376 → 512 0.84–0.88 / 0.89–0.96 (session 42)
            prefetching = whole_rows and rows % tile.rows == 0
            if not prefetching and uses_row_panel(batch, rows, cols, reduction, self.lanes, tile.vectors) and not _slices_columns(sch):
                schedule_gemm_row_panel(sch, self.lanes, tile.rows, tile.vectors, row_panel_k_block(reduction))
            else:
                schedule_gemm(sch, self.lanes, tile.rows, tile.vectors, tile.column_groups)
            return sch
        if packed_weight(sch.get(block)) is not None:
            schedule_panel_matvec(sch, self.lanes, *default_panel_tile(rows, cols, reduction, self.lanes))
            return sch
        tile = default_dense_tile(rows, cols, reduction, self.lanes)
        if tile.k_tasks:
            schedule_dense_split_k(sch, self.lanes, tile.k_tasks, tile.k_unroll)
        else:
            schedule_dense(sch, self.lanes, tile.row_tile, tile.col_tile, tile.k_unroll)
        return sch


def dense_design_spaces(sch: s_tir.Schedule, lanes: int) -> list:
    """MetaSchedule design spaces: the GEMM form's (:func:`gemm_design_spaces`); for fewer rows
    by a packed weight the panel form's (:func:`panel_design_space`); otherwise column tiles with
    sampled row, column and reduction-unroll factors, and (where :func:`split_k_tasks` allows it)
    split-K with sampled task counts and unroll."""
    block = sch.get_sblock(MATMUL_BLOCK)
    batch, rows, cols, reduction = matmul_shape(sch, block)
    if uses_gemm_form(sch, block):
        return gemm_design_spaces(sch, lanes, batch, rows, cols)
    if packed_weight(sch.get(block)) is not None:
        return [panel_design_space(sch, lanes, rows, cols, reduction)]
    space = sch.copy()
    row_tile = categorical(space, [r for r in (1, 2, 4) if rows % r == 0])
    col_tiles = [c for c in range(lanes, cols + 1, lanes) if cols % c == 0 and c <= 1024] or [cols]
    col_tile = categorical(space, col_tiles[-6:])
    k_unroll = categorical(space, [k for k in (1, 2, 4, 8) if reduction % k == 0])
    schedule_dense(space, lanes, row_tile, col_tile, k_unroll)
    spaces = [space]
    if split_k_tasks(rows, cols, reduction, lanes):
        split = sch.copy()
        task_counts = [d for d in (8, 16, 32, 64) if reduction % d == 0 and reduction // d >= SPLIT_K_MIN_ROWS_PER_TASK]
        if task_counts:
            k_tasks = categorical(split, task_counts)
            unrolls = [u for u in (2, 4, 8) if all((reduction // d) % u == 0 for d in task_counts)] or [1]
            schedule_dense_split_k(split, lanes, k_tasks, categorical(split, unrolls))
            spaces.append(split)
    return spaces


def panel_design_space(sch: s_tir.Schedule, lanes: int, rows: int, cols: int, reduction: int):
    """The panel form (:func:`schedule_panel_matvec`) with sampled tile vectors (those of
    :data:`PANEL_VECTORS` that divide the panels and fit the registers) and segments (the default
    and the divisors of the reduction around it, each at least :data:`PANEL_MIN_SEGMENT` long)."""
    panels = cols // lanes
    vectors = [v for v in PANEL_VECTORS if panels % v == 0 and rows * v <= panel_accumulators(lanes)] or [1]
    _, default_segments = default_panel_tile(rows, cols, reduction, lanes)
    segments = [d for d in (1, 2, 4, 8, 16, 32, 64, default_segments) if reduction % d == 0 and reduction // d >= PANEL_MIN_SEGMENT] or [1]
    space = sch.copy()
    schedule_panel_matvec(space, lanes, categorical(space, vectors), categorical(space, segments))
    return space


def gemm_design_spaces(sch: s_tir.Schedule, lanes: int, batch: int, rows: int, cols: int) -> list:
    """One space per register tile of :func:`gemm_register_tiles` that fits the columns, and per
    the same tile with half its rows (fewer accumulators, more chunks of a short product); a tile
    decides how the loops nest, so each is a space of its own, with sampled column groups
    (dividing the column tiles; at least the groups the default chooses for enough chunks)."""
    spaces = []
    tiles_to_try = dict.fromkeys((min(r // halves, rows), v) for r, v in gemm_register_tiles(lanes) for halves in (1, 2))
    # and tiles that cover the rows exactly, which the next-column-group prefetch needs
    tiles_to_try.update(dict.fromkeys((whole_row_tile(rows, min(r, rows)), v) for r, v in gemm_register_tiles(lanes)))
    for tile_rows, vectors in tiles_to_try:
        if cols % lanes or (cols // lanes) % vectors:
            continue
        tile = GemmTile(tile_rows, vectors, 1)
        tiles = cols // lanes // vectors
        least = fewest_parts(tiles, batch * -(-rows // tile.rows))
        space = sch.copy()
        groups = categorical(space, [g for g in range(least, tiles + 1) if tiles % g == 0][:4])
        schedule_gemm(space, lanes, tile.rows, tile.vectors, groups)
        spaces.append(space)
    if not spaces:
        tile = default_gemm_tile(batch, rows, cols, lanes)
        space = sch.copy()
        schedule_gemm(space, lanes, tile.rows, tile.vectors, tile.column_groups)
        spaces.append(space)
    spaces.extend(_row_panel_spaces(sch, lanes, batch, rows, cols))
    return spaces


def _row_panel_spaces(sch: s_tir.Schedule, lanes: int, batch: int, rows: int, cols: int) -> list:
    """Row-panel spaces (:func:`schedule_gemm_row_panel`) for products of few rows, whatever their
    reduction (the default takes them for long ones only): the default tile, sampled reduction
    blocks among the reduction's divisors from 64 to 512 (or the whole reduction)."""
    _, _, _, reduction = matmul_shape(sch, sch.get_sblock(MATMUL_BLOCK))
    tile = default_gemm_tile(batch, rows, cols, lanes)
    if rows > ROW_PANEL_MAX_ROWS or _slices_columns(sch) or cols % (lanes * tile.vectors) or batch * cols // (lanes * tile.vectors) < ROW_PANEL_MIN_CHUNKS:
        return []
    blocks = [block for block in (64, 96, 128, 160, 192, 256, 384, 512) if reduction % block == 0 and block < reduction] or [reduction]
    space = sch.copy()
    schedule_gemm_row_panel(space, lanes, tile.rows, tile.vectors, categorical(space, blocks[:6]))
    return [space]
