"""MetaSchedule design spaces for slimtvm's kernels: the default schedules with sampled tiles.

Each kernel's schedule function takes its tile factors as ints (the untuned default) or as
MetaSchedule random variables. Here they are sampled with ``sample_categorical`` over the
values that make sense for the kernel's shape, so one trace covers the whole space and the
XGBoost cost model ranks candidates before they are measured. fp32 conv kernels get one design
space per (channel blocks, pixels) tile instead: the pixel tile decides where the loop is
partitioned for its tail, which a replayed trace cannot recompute from a new decision. Only the
tiles that fill the accumulator budget or leave one accumulator free are offered (smaller ones
never measured faster), with one channel block only when nothing else divides the channels:
MetaSchedule replays every space's trace while it samples, and 48 spaces per conv made tuning
the light zoo's DenseNet take minutes.
"""

from __future__ import annotations

from tvm import s_tir

from .binary_conv_packed import CHANNEL_LANES, PACKED_CONV_BLOCK
from .bitserial_conv import schedule_binary_conv
from .conv2d_nchwc import CONV_BLOCK, accumulator_budget, chunk_rows, schedule_conv2d_nchwc
from .dense import MATMUL_BLOCK, is_plain_matmul, schedule_dense
from .depthwise_nchwc import DEPTHWISE_BLOCK, schedule_depthwise_nchwc
from .stages import find_block

MAX_ACCUMULATORS = 16  # the search may spill a little past the default budget; measuring decides


def _categorical(sch: s_tir.Schedule, values: list[int]):
    values = sorted(set(values))
    return sch.sample_categorical(values, [1.0 / len(values)] * len(values))


def kernel_kind(sch: s_tir.Schedule) -> str | None:
    """``"conv2d"``, ``"depthwise"``, ``"dense"``, ``"binary_conv2d"`` or None: which template fits this PrimFunc."""
    if find_block(sch, PACKED_CONV_BLOCK) is not None:
        return "binary_conv2d"
    if find_block(sch, CONV_BLOCK) is not None:
        return "conv2d"
    if find_block(sch, DEPTHWISE_BLOCK) is not None:
        return "depthwise"
    block = find_block(sch, MATMUL_BLOCK)
    if block is not None and is_plain_matmul(sch, block):
        return "dense"
    return None


def design_spaces(sch: s_tir.Schedule, lanes: int) -> list:
    """The design spaces of the PrimFunc in ``sch`` (copies of it, traced); [] when none fits."""
    kind = kernel_kind(sch)
    if kind == "conv2d":
        return _conv_spaces(sch, lanes)
    if kind == "depthwise":
        return [_depthwise_space(sch)]
    if kind == "dense":
        return [_dense_space(sch, lanes)]
    if kind == "binary_conv2d":
        return [_binary_conv_space(sch)]
    return []


def _conv_spaces(sch, lanes) -> list:
    loops = sch.get_loops(sch.get_sblock(CONV_BLOCK))
    _, oc_chunks, out_h, out_w, _, _, kernel_h, kernel_w = (int(sch.get(loop).extent) for loop in loops)
    budget = max(MAX_ACCUMULATORS, accumulator_budget(lanes))
    rows = chunk_rows(out_h, out_w)
    orders = (False, True) if kernel_h * kernel_w > 1 else (False,)
    spaces = []
    oc_tiles = [t for t in (2, 3, 4, 6, 8) if oc_chunks % t == 0] or [1]
    for oc_tile in oc_tiles:
        most = min(budget // oc_tile, out_h * out_w)
        for px in sorted({most, max(1, most - 1)}):
            for channels_outside in orders:
                space = sch.copy()
                schedule_conv2d_nchwc(space, oc_tile, px, rows, channels_outside)
                spaces.append(space)
    return spaces


def _depthwise_space(sch):
    loops = sch.get_loops(sch.get_sblock(DEPTHWISE_BLOCK))
    out_h, out_w = int(sch.get(loops[2]).extent), int(sch.get(loops[3]).extent)
    space = sch.copy()
    reg_h = _categorical(space, [h for h in (1, 2, 4) if h <= out_h])
    reg_n = _categorical(space, [w for w in (1, 2, 4, 7, 8, 14, 16) if w <= out_w])
    schedule_depthwise_nchwc(space, reg_h, reg_n)
    return space


def _dense_space(sch, lanes):
    loops = sch.get_loops(sch.get_sblock(MATMUL_BLOCK))
    rows, cols, reduction = (int(sch.get(loop).extent) for loop in loops)
    space = sch.copy()
    row_tile = _categorical(space, [r for r in (1, 2, 4) if rows % r == 0])
    col_tiles = [c for c in range(lanes, cols + 1, lanes) if cols % c == 0 and c <= 1024] or [cols]
    col_tile = _categorical(space, col_tiles[-6:])
    k_unroll = _categorical(space, [k for k in (1, 2, 4, 8) if reduction % k == 0])
    schedule_dense(space, lanes, row_tile, col_tile, k_unroll)
    return space


def _binary_conv_space(sch):
    loops = sch.get_loops(sch.get_sblock(PACKED_CONV_BLOCK))
    out_w, padded_out = int(sch.get(loops[2]).extent), int(sch.get(loops[3]).extent)
    vectors = padded_out // CHANNEL_LANES
    space = sch.copy()
    reg_n = _categorical(space, [w for w in (1, 2, 3, 4, 7, 8) if w <= out_w])
    oc_vectors = _categorical(space, [v for v in (1, 2, 4) if vectors % v == 0])
    schedule_binary_conv(space, reg_n, oc_vectors)
    return space
