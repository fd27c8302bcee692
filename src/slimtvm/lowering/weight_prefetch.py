"""Software prefetch of the next register tile's conv weights, spread over the current tile's work.

A conv whose weights do not fit the cache hierarchy (ResNet-18's last stage: 9.4 MB per conv,
46 MB in the model, against 1 MB of L2 and 32 MB of shared L3) reads each channel block's weights
from memory on the first pixel tile of that block, then from L2 for the other tiles. The first
tile then needs its 590 KB at five times the pace of the average, more than one core's memory
bandwidth, and stalls; the others wait on nothing. The hardware prefetchers cannot help: they
run a few lines ahead of the stream, not one channel block ahead.

Until session 45 the direct conv's schedule also ran such convs in chunks of input channels
outside the pixel tiles, each step prefetching a share of the next chunk (Zen 5, ResNet-18's
512-channel 3×3 convs then 1.21 → 0.99 ms); those convs have since moved to the forms below,
and on Zen 4 every conv still in that form ran 4–12% faster without it
(``schedules/conv2d_nchwc.py``'s docstring), so it was removed.

Convs in the per-tile form on small images (at most 16 pixel chunks per group of channel blocks,
256 KB of weights or more, channel groups outermost) are annotated with
:data:`TILE_PREFETCH_ANNOTATION` on each tile's loop over input-channel blocks: a group's first
chunk would otherwise wait on memory for all the group's weights, and the others find them in
cache. Each of the group's chunks prefetches its share of the next group's, spread over its
steps. Measured on Emerald Rapids (1 thread, per kernel in the whole model, builds in turns):
ResNet-18's 1 × 1 downsampling conv at 7×7 (512 KB) 117–119 → 87–89 µs and its 3×3/2 conv at
7×7 (4.7 MB, one-tile chunks) 1,029–1,061 → 971–982;
RegNetX-400MF's 400 → 400 1×1 convs at 7×7 96 → 87 µs. With regions outermost (small weights
that every pixel chunk reads again, from L2) it made ResNet-18's 3×3/2 conv at 28×28 11% slower,
and at 28 chunks per group (28×28 images) gained nothing: neither is annotated. Nor is a
group whose weights have fewer cache lines than its chunks have steps (every step prefetches at
least one line, so the extra steps re-issued the last line's prefetch): ResNeXt-50's 256 → 256
1×1 conv at 56×56 (fourteen 224-pixel chunks per group, 512 lines over 6,272 steps) ran 15–22%
slower with it on Zen 4 (1 / 2 threads, per kernel in the model, builds in turns: 4,692 / 2,736
→ 3,987 / 2,135 µs without it), while the annotated 7×7 and 14×14 convs of ResNet-18/50 and
ResNeXt-50 (two or more lines per step) took 0.97–1.12× their time with it when built without it
(mostly slower; the same runs).

The conv forms prefetch into L1 only what is at most :data:`L1_PREFETCH_MAX_BYTES` ahead of its
use, and into L2 otherwise (:func:`prefetch_locality`); the dense kernel's always into L1.

The Winograd product (``schedules/winograd_conv.py``, weights over 1 MB) is annotated with
:data:`WINOGRAD_ANNOTATION`: there each parallel task's weights are one contiguous slice, and
its steps prefetch the next task's slice.

The dense kernel's GEMM form on a packed weight (``schedules/dense.py``, fewer rows than columns,
512 KB of weights or more, x86) is annotated with ``GROUP_PREFETCH_ANNOTATION``: a column group's
panels are one contiguous slice, and every (row tile, column tile) of the group prefetches an
equal share of the next group's, a few lines every 16 reduction steps. The Llama's 40 × 512 →
1376 products 551–659 → 422–475 µs at 1 thread (Emerald Rapids, builds in turns; session 42).

TVM 0.27's Python API has no TIR statement mutator; ``tvm_ffi.structural_map`` rebuilds the
loop nest with the new statement. The pass changes no arithmetic: the prefetches have no result.
"""

from __future__ import annotations

import math

import tvm
import tvm_ffi
from tvm import tirx
from tvm.ir.expr import TensorLoad
from tvm.s_tir import SBlockRealize
from tvm.tirx.stmt import Evaluate, For, ForKind, SeqStmt

from ..schedules.conv2d_nchwc import CACHE_LINE_BYTES as LINE_BYTES
from ..schedules.conv2d_nchwc import CONV_BLOCK, TILE_PREFETCH_ANNOTATION
from ..schedules.dense import COLUMN_GROUPS_ANNOTATION, GROUP_PREFETCH_ANNOTATION, MATMUL_BLOCK, packed_weight
from ..schedules.winograd_conv import GEMM_BLOCK as WINOGRAD_BLOCK
from ..schedules.winograd_conv import PREFETCH_ANNOTATION as WINOGRAD_ANNOTATION
from .prim_func_rewrites import rewrite_prim_funcs

IN_L1, IN_L2 = 3, 2  # LLVM prefetch localities: x86 prefetcht0 and prefetcht1
L1_PREFETCH_MAX_BYTES = 32 * 1024  # the smallest L1 data cache of the x86 cores slimtvm targets (Zen 4; 48 KB on Zen 5 and Intel since Ice Lake)


def insert_weight_prefetch() -> tvm.transform.Pass:
    """Module pass: rewrite every loop annotated with :data:`TILE_PREFETCH_ANNOTATION` (the direct
    conv's per-tile loop over input-channel blocks), :data:`WINOGRAD_ANNOTATION` (the Winograd
    product's loop over input blocks) or ``GROUP_PREFETCH_ANNOTATION`` (the dense kernel's loop
    over reduction blocks). A loop whose conv reads no 6-D (blocked) weights, such as a
    plain-input stem's, loses the annotation and gets no prefetch; other functions are left as
    they are."""

    @tvm.transform.module_pass(opt_level=0, name="slimtvm.InsertWeightPrefetch")
    def _insert(mod, _ctx):
        return rewrite_prim_funcs(mod, [(For, _with_prefetch)])

    return _insert


def _with_prefetch(loop: For) -> For:
    annotations = loop.annotations or {}
    if TILE_PREFETCH_ANNOTATION in annotations:
        return _per_tile_prefetch(loop, TILE_PREFETCH_ANNOTATION)
    if WINOGRAD_ANNOTATION in annotations:
        return _winograd_prefetch(loop, WINOGRAD_ANNOTATION)
    if GROUP_PREFETCH_ANNOTATION in annotations:
        return _gemm_group_prefetch(loop, GROUP_PREFETCH_ANNOTATION)
    return loop


def _per_tile_prefetch(loop: For, key: str) -> For:
    """The direct conv's per-tile form, annotated on a register tile's loop over input-channel
    blocks: the ``shares`` chunks that read one group of ``oc_tile`` channel blocks' weights in
    turn (the pixel chunks of an image; the last one may be partial) each prefetch their share
    of the next group's weights, spread evenly over their tiles' steps. The last group prefetches
    its own."""
    oc_tile, px, chunk_pixels, tiles, shares = (int(v) for v in loop.annotations[key])
    realize, kernel = _block_and_weights(loop, CONV_BLOCK)
    if kernel is None:
        return _rebuilt(loop, key, [])
    oc_base, p_base = task_origin(loop, realize)[1:3]  # (n, oc, pixel, …): the tile's first

    blocks = int(kernel.shape[0])
    per_block, per_line = math.prod(int(d) for d in kernel.shape[1:]), _floats_per_line(kernel)
    group_elements = oc_tile * per_block
    lines_per_step = math.ceil(math.ceil(group_elements / per_line) / (shares * tiles * int(loop.extent)))
    share = tirx.floordiv(p_base, chunk_pixels)  # which of the group's chunks: 0 … shares − 1
    step = (share * tiles + tirx.floordiv(tirx.floormod(p_base, chunk_pixels), px)) * int(loop.extent) + loop.loop_var
    next_start = tirx.min(oc_base + oc_tile, blocks - oc_tile) * per_block
    element = lambda line: next_start + tirx.min((step * lines_per_step + line) * per_line, group_elements - 1)  # noqa: E731
    ahead = group_elements * _bytes_per_element(kernel)  # the next group, while this group's chunks run
    return _rebuilt(loop, key, [_prefetch_loop(kernel, element, lines_per_step, loop, prefetch_locality(ahead))])


def _winograd_prefetch(loop: For, key: str) -> For:
    """The Winograd product's form (schedules/winograd_conv.py, unbanded): each parallel task
    (one position ``(ξ, ν)`` and ``oc_tile`` output blocks) reads a contiguous slice of the
    transformed weights, and the next task the slice after it; the annotated loop over input
    blocks, inside each group of ``px`` tiles, prefetches an equal share of that next slice."""
    oc_tile, px, groups = (int(v) for v in loop.annotations[key])
    realize, weights = _block_and_weights(loop, WINOGRAD_BLOCK)
    if weights is None:
        return _rebuilt(loop, key, [])
    xi, nu, tile, oc = task_origin(loop, realize)[:4]

    shape = [int(d) for d in weights.shape]
    per_block, total, per_line = math.prod(shape[3:]), math.prod(shape), _floats_per_line(weights)
    lines_per_step = math.ceil(math.ceil(oc_tile * per_block / per_line) / (groups * int(loop.extent)))
    step = tirx.floordiv(tile, px) * int(loop.extent) + loop.loop_var
    next_start = ((xi * shape[1] + nu) * shape[2] + oc + oc_tile) * per_block
    element = lambda line: tirx.min(next_start + (step * lines_per_step + line) * per_line, total - 1)  # noqa: E731
    ahead = oc_tile * per_block * _bytes_per_element(weights)  # the next task's slice
    return _rebuilt(loop, key, [_prefetch_loop(weights, element, lines_per_step, loop, prefetch_locality(ahead))])


def _gemm_group_prefetch(loop: For, key: str) -> For:
    """The dense kernel's GEMM form with packed weights ``[N / P, K, P]`` (schedules/dense.py,
    ``GROUP_PREFETCH_ANNOTATION`` = [tile rows, tile columns, row tiles] and the column groups
    beside it): a column group's panels are one contiguous slice of the weight, the next group's
    the slice after it; the annotated loop over blocks of reduction steps, in every (row tile,
    column tile) of the group, prefetches an equal share of that next slice."""
    tile_rows, tile_columns, row_tiles = (int(v) for v in loop.annotations[key])
    groups = int(loop.annotations[COLUMN_GROUPS_ANNOTATION])
    realize = find_node(loop.body, lambda node: isinstance(node, SBlockRealize) and str(node.block.name_hint).startswith(MATMUL_BLOCK))
    weight = packed_weight(realize.block)
    loop = _rebuilt(loop, COLUMN_GROUPS_ANNOTATION, [])
    if weight is None:
        return _rebuilt(loop, key, [])
    shape = [int(d) for d in weight.shape]
    total, per_line, reduction = math.prod(shape), _floats_per_line(weight), shape[1]
    column_tiles = shape[0] * shape[2] // tile_columns // groups  # per group
    row, column = task_origin(loop, realize)[-3:-1]
    tile = tirx.floordiv(column, tile_columns)
    group, tile_in_group = tirx.floordiv(tile, column_tiles), tirx.floormod(tile, column_tiles)
    step = (tirx.floordiv(row, tile_rows) * column_tiles + tile_in_group) * int(loop.extent) + loop.loop_var
    group_floats = column_tiles * tile_columns * reduction
    lines_per_step = math.ceil(group_floats / per_line / (row_tiles * column_tiles * int(loop.extent)))
    next_start = (group + 1) * group_floats
    element = lambda line: tirx.min(next_start + (step * lines_per_step + line) * per_line, total - 1)  # noqa: E731
    # into L1 whatever the distance: the Llama's 40 × 512 → 1376 products ran 1–3% slower with
    # prefetcht1 (Zen 4, per kernel in the model, builds in turns), unlike the convs
    return _rebuilt(loop, key, [_prefetch_loop(weight, element, lines_per_step, loop, IN_L1)])


def _block_and_weights(loop: For, block_name: str):
    """The realize of the annotated kernel's main block under ``loop`` and the 6-D weights it
    reads (None when it reads none)."""
    realize = find_node(loop.body, lambda node: isinstance(node, SBlockRealize) and str(node.block.name_hint).startswith(block_name))
    weights = [node.source for node in _walk(realize.block.body) if isinstance(node, TensorLoad) and len(node.source.shape) == 6]
    return realize, (weights[0] if weights else None)


def task_origin(loop: For, realize) -> list:
    """The block's iterator values with ``loop`` and every loop inside it at 0: where the
    current step of the current tile starts, in terms of the outer loops."""
    inner = {loop.loop_var} | {node.loop_var for node in _walk(loop.body) if isinstance(node, For)}
    zeros = {var: tirx.const(0, var.ty.dtype) for var in inner}
    return [_substitute(value, zeros) for value in realize.iter_values]


def _floats_per_line(buffer) -> int:
    return LINE_BYTES * 8 // tvm.DataType(str(buffer.dtype)).bits


def prefetch_locality(ahead_bytes: int) -> int:
    """The conv forms' prefetch locality for weights fetched ``ahead_bytes`` ahead of their use:
    :data:`IN_L1` (x86 ``prefetcht0``) where they fit :data:`L1_PREFETCH_MAX_BYTES`, else
    :data:`IN_L2` (``prefetcht1``, into L2 only). Lines prefetched further ahead than L1 holds
    push out the lines the tile is reading now before they are read themselves, and (likely)
    a ``prefetcht0`` that misses L2 holds one of L1's few miss buffers for its whole trip to
    memory, which the tile's own loads then wait for.

    Zen 4, per kernel in the model, 1 thread, builds in turns (µs, every prefetch ``prefetcht0``
    → this rule): ResNet-18's 512-channel Winograd products at 7×7 (a 64 KB slice ahead)
    1,687–1,805 → 1,356–1,374 and its 3×3/2 conv at 7×7 (295 KB groups) 1,365 → 1,165; ResNet-50's
    3×3/2 convs at 7×7 and 14×14 2,731 → 2,276 and 2,439 → 2,345 (the latter then in the
    weight-chunk form, since removed). The 256-channel Winograd products at 14×14 (a 32 KB slice,
    read from L1) keep ``prefetcht0``: with ``prefetcht1`` they took 1,053–1,103 µs against
    998–1,019. VGG-11's 512-channel products at 14×14 and
    MobileNetV2's 1×1 convs (36–123 KB ahead) stayed within 2% either way. Whole runs (20–30 in
    turns, 1 / 2 threads): Wide ResNet-50-2 0.97 / 0.96 of its time, ResNeXt-50, DenseNet-121,
    EfficientNet-B0, RegNetY-400MF and VGG-11 within 1.5%."""
    return IN_L1 if ahead_bytes <= L1_PREFETCH_MAX_BYTES else IN_L2


def _bytes_per_element(buffer) -> int:
    return tvm.DataType(str(buffer.dtype)).bits // 8


def _prefetch_loop(buffer, element_of_line, lines: int, loop: For, locality: int) -> For:
    """``for line in range(lines): prefetch(&buffer[element_of_line(line)])`` (flat element index;
    ``locality`` as LLVM's prefetch takes it: :data:`IN_L1` or :data:`IN_L2`)."""
    index_type = loop.loop_var.ty.dtype
    line = tirx.Var("prefetch_line", index_type)
    address = tirx.address_of(buffer[tuple(_unravel(element_of_line(line), [int(d) for d in buffer.shape]))])
    body = Evaluate(tirx.call_intrin("void", "tirx.prefetch", address, 0, locality, 1))
    return For(line, tirx.const(0, index_type), tirx.const(lines, index_type), ForKind.SERIAL, body)


def _rebuilt(loop: For, key: str, prefetches: list) -> For:
    """``loop`` without the annotation ``key``, with ``prefetches`` at the top of its body."""
    annotations = {name: value for name, value in loop.annotations.items() if name != key}
    body = SeqStmt([*prefetches, loop.body]) if prefetches else loop.body
    return For(loop.loop_var, loop.min, loop.extent, loop.kind, body, loop.thread_binding, annotations)


def _unravel(element, shape):
    indices = []
    for stride_index in range(len(shape)):
        stride = math.prod(shape[stride_index + 1 :])
        index = tirx.floordiv(element, stride)
        indices.append(tirx.floormod(index, shape[stride_index]) if stride_index else index)
    return indices


def _substitute(expr, mapping):
    return tvm_ffi.structural_map(expr, [(tirx.Var, lambda var: mapping.get(var, var))])


def _walk(node):
    found = []
    tvm_ffi.structural_walk(node, lambda value: found.append(value))
    return found


def find_node(node, predicate):
    return next(value for value in _walk(node) if predicate(value))
