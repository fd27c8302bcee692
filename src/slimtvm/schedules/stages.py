"""The stages every slimtvm kernel schedule starts from: the main block, its padding, its epilogue.

A fused PrimFunc is [padding stages] → main block (conv / depthwise / matmul) → [element-wise
epilogue]. The schedules compute the main block per register tile inside the loops of the
epilogue's last stage; without an epilogue a write-back stage takes its place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tvm import s_tir, topi


@dataclass
class KernelStages:
    main: object  # block RV of the main computation
    pads: list  # block RVs of its zero-padding stages
    out: object  # block RV of the stage that writes the result (epilogue or write-back)


# Parallel chunks a kernel's parallel loop should offer: four per thread at 16 threads (TVM's pool
# gives each thread one contiguous range of the loop, so fewer, larger chunks leave cores idle).
MIN_PARALLEL_CHUNKS = 64
OUT_EWISE_FUSABLE = 4  # TVM's OpPatternKind kOutEWiseFusable: element-wise consumers fuse into it


MIN_ACCUMULATORS = 8  # two FMA pipes × 4 cycles of latency: fewer chains leave them idle


def max_accumulators(lanes: int) -> int:
    """Accumulator registers of a register tile that broadcasts one input per FMA: 28 of
    AVX-512's 32 (the broadcast operand is embedded in the FMA; the rest hold weight vectors), 12
    of AVX2's 16 (one more holds the broadcast value, as AVX2's FMA has no embedded broadcast)."""
    return 28 if lanes >= 16 else 12


def fewest_parts(extent: int, chunks: int) -> int:
    """The fewest equal parts of a loop of ``extent`` (a divisor of it) that, with the ``chunks``
    the other parallel loops offer, make :data:`MIN_PARALLEL_CHUNKS`; ``extent`` when none does."""
    return next((d for d in range(1, extent + 1) if extent % d == 0 and chunks * d >= MIN_PARALLEL_CHUNKS), extent)


SPATIAL_PARTITION_MAX_PIXELS = 28 * 28


def spatial_partition(out_pixels: int, weight_bytes: int, activation_bytes: int, max_pixels: int | None = SPATIAL_PARTITION_MAX_PIXELS) -> bool:
    """Whether a conv's parallel loop should run image regions outermost (each thread a band of
    the image's pixels, every channel group of it) rather than channel groups outermost (each
    thread some output channels at every pixel). TVM's pool hands each thread one contiguous range
    of the loop, so this decides which data a core keeps in its own L2 from one kernel to the
    next: with channel groups outermost, a 1×1 conv after a depthwise conv reads every input
    channel of its pixels, half of them (at 2 threads; 15/16 at 16) written by the other core.

    Regions outermost where the weights (which every thread then reads whole) are no more than the
    input and output activations, and the output has at most ``max_pixels`` pixels (None: any
    size). MobileNetV2 on Zen 4 (``benchmarks/profile_kernels.py --threads 1,2``, in turns):
    its 384 → 64 projections at 14×14 ran ×1.59–1.73 faster at 2 threads than at 1 with channel
    groups outermost, ×1.9 with regions (the same kernel alone, its input written by one core:
    ×1.87); the whole model (``benchmarks/compare_builds.py``, 60 runs in turns) 4.69 → 4.49 ms
    at 2 threads and 7.74 → 7.42 at 1; Bi-Real Net 18's float convs 3.52 → 3.36 ms at 2 threads;
    ResNet-18 within noise (11.55 / 11.29 and 21.36 / 20.74 ms). Depthwise convs keep the
    default limit of 28 × 28: MobileNetV2's at 112×112 and 56×56 ran about twice as slow at 1
    thread with rows outermost (each row of work then touches every channel plane, 800 KB
    apart). Dense convs take no limit (``max_pixels=None``, schedules/conv2d_nchwc.py): a 1×1
    conv reads every input channel plane for each output pixel either way, and with channel
    groups outermost each core read the whole input, half of it from the other core's L2.
    Session 50 (Emerald Rapids, 2 threads, per kernel in turns): ResNet-50's 256 → 64 1×1 convs
    at 56×56 544–566 → 317–342 µs, its 64 → 64 one 132 → 85, its 256 → 128 one 867 → 637;
    MobileNetV2's 16 → 96 expansion at 112×112 214 → 148; at 1 thread within 3%.
    Not a tuning decision: MetaSchedule times a kernel alone, where its input is in one core's
    caches whichever way the loop runs."""
    return (max_pixels is None or out_pixels <= max_pixels) and weight_bytes <= activation_bytes


def find_block(sch: s_tir.Schedule, name: str):
    """The block called ``name``, or None when the PrimFunc has none (or several).

    Looks the name up among the function's blocks first: a failed ``get_sblock`` raises an
    error whose message holds the whole function's text, milliseconds for a large kernel, and
    every family's rule asks every kernel of a model (DenseNet-121: 5,400 lookups, 26 s of an
    85 s compile)."""
    names = _block_names(sch)
    if names is not None and name not in names:
        return None
    try:
        return sch.get_sblock(name)
    except Exception:  # noqa: BLE001 - no such block, or more than one of that name
        return None


def _block_names(sch: s_tir.Schedule) -> set | None:
    """The names of every block of the PrimFunc in ``sch`` (walking down from its root), or None
    for a function without a root block (written without blocks, as TVM's sort kernels)."""
    try:
        pending = [sch.get_sblock("root")]
    except Exception:  # noqa: BLE001 - no root block
        return None
    names = set()
    while pending:
        block = pending.pop()
        names.add(sch.get(block).name_hint)
        pending.extend(sch.get_child_blocks(block))
    return names


def categorical(sch: s_tir.Schedule, values: list):
    """A MetaSchedule decision among ``values`` (duplicates dropped), all equally likely."""
    values = sorted(set(values))
    return sch.sample_categorical(values, [1.0 / len(values)] * len(values))


def split_stages(sch: s_tir.Schedule, main_name: str) -> KernelStages:
    """Inline the epilogue into its last stage (or add a write-back) and name the stages.

    An epilogue that ends by broadcasting the result to a larger tensor (a squeeze-excite gate:
    ``x · sigmoid(conv(pool(x)))``, where the conv's output is one pixel and ``x`` is a whole
    image) keeps its stages before the first larger one as the kernel's ``out``; the broadcast
    stages from there run as one loop nest of their own (:func:`_schedule_broadcast_tail`): the
    family's tiles follow the main block's pixels, which the broadcast output does not have. A
    smaller last stage (a classifier's slice of its padded columns) stays the ``out``, as before."""
    blocks = sch.get_child_blocks(sch.get_sblock("root"))
    names = [sch.get(block).name_hint for block in blocks]
    index = names.index(main_name)
    main = blocks[index]
    pads = [block for block, name in zip(blocks[:index], names[:index]) if name.startswith("data_pad")]
    epilogue = blocks[index + 1 :]
    size = math.prod(_written_shape(sch, main))
    broadcast = next((i for i, block in enumerate(epilogue) if math.prod(_written_shape(sch, block)) > size), len(epilogue))
    epilogue, tail = epilogue[:broadcast], epilogue[broadcast:]
    for block in epilogue[:-1]:
        sch.compute_inline(block)
    out = epilogue[-1] if epilogue else sch.cache_write(main, 0, "global")
    if tail:
        _schedule_broadcast_tail(sch, tail)
    return KernelStages(main, pads, out)


def _written_shape(sch: s_tir.Schedule, block) -> tuple:
    return tuple(int(extent) for extent in sch.get(block).writes[0].source.shape)


def _schedule_broadcast_tail(sch: s_tir.Schedule, tail: list) -> None:
    """The stages after a kernel's result that broadcast it (see :func:`split_stages`), inlined
    into the last one: parallel over its outer loops, innermost loop (a channel block) vectorized."""
    for block in tail[:-1]:
        sch.compute_inline(block)
    loops = sch.get_loops(tail[-1])
    if len(loops) > 1:
        sch.parallel(sch.fuse(*loops[:-1]))
    sch.vectorize(loops[-1])


def schedule_padding(sch: s_tir.Schedule, pads: list, regions: bool = False) -> None:
    """Padding runs as its own stage: parallel over its outer loops (batch, channels, rows; with
    ``regions``, rows outside the channels, as the conv that reads it: :func:`spatial_partition`),
    innermost loop vectorized."""
    for pad in pads:
        loops = sch.get_loops(pad)
        if regions and len(loops) >= 3:
            sch.reorder(loops[0], loops[2], loops[1])
            loops = sch.get_loops(pad)
        sch.parallel(sch.fuse(*loops[:3]))
        sch.vectorize(loops[-1])


def zero_padded(data, geometry):
    """``data`` (NCHW, or NCHW[x]c with the block last) with ``geometry``'s zero padding on H
    and W, as a ``data_pad`` stage; ``data`` itself when the conv has no padding."""
    if not geometry.has_padding:
        return data
    extra = [0] * (len(data.shape) - 4)
    before = [0, 0, geometry.top, geometry.left, *extra]
    after = [0, 0, geometry.bottom, geometry.right, *extra]
    return topi.nn.pad(data, before, after, name="data_pad")
