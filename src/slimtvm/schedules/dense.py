"""fp32 dense / matmul ``out[i, j] = Σ_k x[i, k] · w[k, j]`` (Relax's legalized ``matmul``): CPU schedule.

Classifier layers run at batch 1, so this is a matrix-vector product bound by reading ``w``
once, and ``w`` should be read in long contiguous runs. A task owns ``col_tile`` output columns
(an accumulator row in L1) × ``row_tile`` rows of ``x``; for each group of ``k_unroll`` rows of
``w`` it sweeps the task's columns one SIMD vector at a time (load accumulator, ``k_unroll``
multiply-adds, store). The fused epilogue (bias, activation) runs on the task's tile; tasks
over column ranges run in parallel.
"""

from __future__ import annotations

from dataclasses import dataclass

from tvm import s_tir

from .cpu_rule import CPURule
from .stages import categorical, split_stages

MATMUL_BLOCK = "matmul"


@dataclass(frozen=True)
class DenseTile:
    """``row_tile`` rows × ``col_tile`` columns per task; the reduction unrolled by ``k_unroll``."""

    row_tile: int
    col_tile: int
    k_unroll: int


def default_dense_tile(rows: int, cols: int, reduction: int, lanes: int) -> DenseTile:
    """Column ranges of at most half the columns (two tasks or more), a multiple of ``lanes``
    dividing ``cols`` when one exists; up to 4 rows dividing ``rows``; ``k`` unrolled by 4 when
    it divides."""
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
        schedule_dense(sch, self.lanes, tile.row_tile, tile.col_tile, tile.k_unroll)
        return sch


def dense_design_spaces(sch: s_tir.Schedule, lanes: int) -> list:
    """One MetaSchedule design space: the default schedule with sampled row, column and
    reduction-unroll factors."""
    loops = sch.get_loops(sch.get_sblock(MATMUL_BLOCK))
    rows, cols, reduction = (int(sch.get(loop).extent) for loop in loops)
    space = sch.copy()
    row_tile = categorical(space, [r for r in (1, 2, 4) if rows % r == 0])
    col_tiles = [c for c in range(lanes, cols + 1, lanes) if cols % c == 0 and c <= 1024] or [cols]
    col_tile = categorical(space, col_tiles[-6:])
    k_unroll = categorical(space, [k for k in (1, 2, 4, 8) if reduction % k == 0])
    schedule_dense(space, lanes, row_tile, col_tile, k_unroll)
    return [space]
