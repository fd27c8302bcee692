"""Row kernels: a softmax or layer norm over the last axis (a transformer's attention and norms).

Such a kernel is a few stages over the same rows: reductions of each row to a value (maximum,
sum, sum of squares), per-row values computed from those (mean), and element-wise stages over
the row that read them. TVM's generic schedule runs each stage over the whole tensor in turn,
with scalar reductions, which took DeiT-Tiny's softmax (3 × 197 rows of 208 keys) 300 µs.
Here a parallel loop runs over the rows, and every stage is computed for one row at a time
inside it: each reduction keeps one running value per SIMD lane over the row's vectors
(``rfactor``), then adds up (or takes the maximum of) the lanes; the element-wise stages
run over whole vectors of the row. The row stays in L1 from the first stage to the last.

Takes a PrimFunc whose last stage is element-wise over ``[rows..., N]`` (or over the per-row
values: a group norm's statistics, one variance per ``[1, 1, C·H·W]`` row, which the generic
schedule summed in one scalar chain, 1.2 ms of MobileViTV2's 27 at 1 thread) and whose other stages
are element-wise over the same shape, per-row values ``[rows...]``, or reductions of the last
axis to ``[rows...]`` (unit axes aside: a layer norm exported as ``ReduceMean(keepdims=1)``,
``Sub``, ``Pow``, … keeps one); refuses anything else (the generic schedule takes it), including rows of
fewer than two SIMD vectors, which gain nothing.
"""

from __future__ import annotations

import tvm
from tvm import s_tir

from .cpu_rule import CPURule


def _extents(sch, block) -> list | None:
    extents = [sch.get(loop).extent for loop in sch.get_loops(block)]
    if not all(isinstance(extent, tvm.tirx.IntImm) for extent in extents):
        return None
    return [int(extent) for extent in extents]


def _kinds(sch, block) -> str:
    return "".join("S" if int(var.iter_type) == 0 else "R" for var in sch.get(block).iter_vars)


def _written_shape(sch, block) -> list:
    return [int(extent) for extent in sch.get(block).writes[0].source.shape]


def _squeezed(extents: list) -> list:
    """The extents without unit axes (a ``ReduceMean(keepdims=1)`` keeps one)."""
    return [extent for extent in extents if extent != 1]


def row_stages(sch: s_tir.Schedule, lanes: int) -> tuple | None:
    """(rows shape, row length, blocks) when ``sch`` is a row kernel of the module docstring;
    None otherwise."""
    try:
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
    except Exception:  # noqa: BLE001 - no root block
        return None
    if len(blocks) < 2:
        return None
    last = _extents(sch, blocks[-1])
    if last is None or len(last) < 2 or _kinds(sch, blocks[-1]) != "S" * len(last):
        return None
    rows, length = last[:-1], last[-1]
    statistics = _statistics_shape(sch, blocks, last)
    if statistics is not None:
        rows, length = statistics
    if length < 2 * lanes or not any("R" in _kinds(sch, block) for block in blocks):
        return None
    row_shape = _squeezed(rows)
    for block in blocks[:-1]:
        extents, kinds = _extents(sch, block), _kinds(sch, block)
        if extents is None or len(extents) != len(kinds):
            return None
        if "R" in kinds[:-1] or (kinds[-1] == "R" and extents[-1] != length):
            return None  # reductions over the last axis only
        written = _squeezed(_written_shape(sch, block))
        if written == row_shape and (kinds[-1] == "R" or _squeezed(extents) == row_shape):
            continue  # a reduction of each row, or one value per row
        if kinds[-1] == "S" and written == row_shape + [length] and extents[-1] == length:
            continue  # element-wise over the rows
        return None
    return rows, length, blocks


def _statistics_shape(sch, blocks, last: list) -> tuple | None:
    """(rows, row length) when the kernel's result is one value per row (a group norm's
    statistics: the variance of a whole ``[1, 1, C·H·W]`` row, then its square root), the rows
    being the reductions' leading extents; None when the last stage runs over the rows' values."""
    reductions = [block for block in blocks if "R" in _kinds(sch, block)]
    if not reductions:
        return None
    extents = _extents(sch, reductions[0])
    if extents is None or _kinds(sch, reductions[0])[-1] != "R" or _squeezed(last) != _squeezed(extents[:-1]):
        return None
    return extents[:-1], extents[-1]


def schedule_rows(sch: s_tir.Schedule, lanes: int) -> None:
    """Apply the module docstring's schedule (``sch`` must pass :func:`row_stages`)."""
    rows, length, blocks = row_stages(sch, lanes)
    names = [sch.get(block).name_hint for block in blocks]
    last = blocks[-1]
    loops = sch.get_loops(last)
    per_row_result = _squeezed([int(sch.get(loop).extent) for loop in loops]) == _squeezed(rows)
    row_loops = loops if per_row_result else loops[:-1]
    row = sch.fuse(*row_loops) if len(row_loops) > 1 else row_loops[0]
    sch.parallel(row)
    if not per_row_result:
        _vectorize_row(sch, loops[-1], length, lanes)
    # producers last to first, so that each one's readers are already inside the row loop; a
    # stage read by one other stage is inlined into it, one read twice (a softmax's
    # exponentials) is computed once per row
    for name in reversed(names[:-1]):
        block = sch.get_sblock(name)
        kinds = _kinds(sch, block)
        if "R" in kinds:
            _row_reduction(sch, block, row, length, lanes)
            continue
        if len(sch.get_consumers(block)) == 1:
            try:
                sch.compute_inline(block)
                continue
            except Exception:  # noqa: BLE001 - e.g. read by a reduction's init: computed per row instead
                pass
        per_row = _squeezed(_written_shape(sch, block)) == _squeezed(rows)
        sch.compute_at(block, row, preserve_unit_loops=True)
        if not per_row:
            _vectorize_row(sch, sch.get_loops(block)[-1], length, lanes)


def _vectorize_row(sch, loop, length: int, lanes: int) -> None:
    if length % lanes == 0:
        _, vector = sch.split(loop, [None, lanes])
        sch.vectorize(vector)


def _row_reduction(sch, block, row, length: int, lanes: int) -> None:
    """A reduction of the row, computed inside the ``row`` loop: one running value per lane over
    the row's vectors (an ``rfactor``, done before the move, as TVM requires), then the lanes
    reduced; a row that is not whole vectors is reduced by a scalar loop."""
    if length % lanes:
        sch.compute_at(block, row, preserve_unit_loops=True)
        return
    _, lane = sch.split(sch.get_loops(block)[-1], [None, lanes])
    partial = sch.rfactor(lane, 0)
    sch.compute_at(block, row, preserve_unit_loops=True)
    sch.compute_at(partial, row, preserve_unit_loops=True)
    # under the row loop: the lanes (rfactor's new first axis), unit loops, the vectors
    loops = sch.get_loops(partial)
    below_row = next(i for i, loop in enumerate(loops) if sch.get(loop).same_as(sch.get(row))) + 1
    lane_loop, vectors = loops[below_row], loops[-1]
    sch.reorder(vectors, lane_loop)
    sch.vectorize(lane_loop)
    sch.decompose_reduction(partial, vectors)


class RowReductions(CPURule):
    """dlight rule for the row kernels of the module docstring (before the generic fallback)."""

    def schedule(self, sch):
        if row_stages(sch, self.lanes) is None:
            return None
        try:
            schedule_rows(sch, self.lanes)
        except Exception:  # noqa: BLE001 - a shape these steps do not fit: the generic schedule takes it
            return None
        return sch
