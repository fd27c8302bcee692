"""fp32 dense / matmul ``out[i, j] = Σ_k x[i, k] · w[k, j]`` (Relax's legalized ``matmul``): CPU schedule.

Classifier layers run at batch 1, so this is a matrix-vector product bound by reading ``w``
once (from DRAM: the layers before it have evicted it), and ``w`` should be read in long
contiguous runs. Two forms:

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

from dataclasses import dataclass

from tvm import s_tir

from .cpu_rule import CPURule
from .stages import MIN_PARALLEL_CHUNKS, categorical, split_stages

MATMUL_BLOCK = "matmul"


SPLIT_K_MAX_ROWS = 4
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
    # the final pass: per output vector, add the tasks' partial rows, then the epilogue
    cols = int(sch.get(sch.get_loops(out)[-1]).extent)
    final_lanes = lanes // 2 if cols // lanes < MIN_PARALLEL_CHUNKS and lanes > 4 else lanes  # chunks over vectors
    out_vectors, out_vector = sch.split(sch.get_loops(out)[-1], [None, final_lanes])
    sch.parallel(out_vectors)
    sch.vectorize(out_vector)
    sch.compute_at(matmul, out_vectors, preserve_unit_loops=True)
    sch.vectorize(sch.get_loops(matmul)[-1])


def is_plain_matmul(sch, block) -> bool:
    """Two spatial iterators and one reduction, as Relax legalizes a 2-D ``matmul``."""
    iter_types = [int(var.iter_type) for var in sch.get(block).iter_vars]
    return len(iter_types) == 3 and iter_types[:2] == [0, 0] and iter_types[2] != 0 and len(sch.get_loops(block)) == 3


class Dense(CPURule):
    """dlight rule: schedules a PrimFunc whose main block is a 2-D ``matmul``."""

    main_block = MATMUL_BLOCK

    def accepts(self, sch, block) -> bool:
        return is_plain_matmul(sch, block)

    def schedule_block(self, sch, block):
        rows, cols, reduction = (int(sch.get(loop).extent) for loop in sch.get_loops(block))
        tile = default_dense_tile(rows, cols, reduction, self.lanes)
        if tile.k_tasks:
            schedule_dense_split_k(sch, self.lanes, tile.k_tasks, tile.k_unroll)
        else:
            schedule_dense(sch, self.lanes, tile.row_tile, tile.col_tile, tile.k_unroll)
        return sch


def dense_design_spaces(sch: s_tir.Schedule, lanes: int) -> list:
    """MetaSchedule design spaces: column tiles with sampled row, column and reduction-unroll
    factors, and (where :func:`split_k_tasks` allows it) split-K with sampled task counts and
    unroll."""
    loops = sch.get_loops(sch.get_sblock(MATMUL_BLOCK))
    rows, cols, reduction = (int(sch.get(loop).extent) for loop in loops)
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
