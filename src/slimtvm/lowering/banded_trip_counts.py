"""The banded conv's reduction loop runs each tile's own count of input channels.

TE has no reduction whose extent depends on the output index (``te.sum``'s ``where`` is dropped
by ``create_prim_func`` in TVM 0.27), so the banded kernel (schedules/banded_conv.py) reduces
over the widest band, its weights zero past each tile's count, and annotates the reduction loop
with :data:`ANNOTATION` = (``oc_tile``, the counts). This pass, after scheduling, gives that loop
the count of the tile it runs in (a select on the tile index, which LLVM computes once per
tile): ShuffleNet v1's 272-channel 1×1 convs at 14×14 reduce over 1,360 channel rows instead of
17 × 136. The loop's block iterates over the same values as before, fewer of them; the skipped
steps multiplied zero weights.
"""

from __future__ import annotations

import tvm
from tvm import tirx
from tvm.s_tir import SBlockRealize
from tvm.tirx.stmt import For

from ..schedules.banded_conv import BANDED_BLOCK, select_table
from ..schedules.banded_conv import TRIP_COUNTS_ANNOTATION as ANNOTATION
from .prim_func_rewrites import rewrite_prim_funcs
from .weight_prefetch import find_node, task_origin


def set_banded_trip_counts() -> tvm.transform.Pass:
    """Module pass: every loop annotated with :data:`ANNOTATION` gets its tile's count as extent
    (and loses the annotation); other functions are left as they are."""

    @tvm.transform.module_pass(opt_level=0, name="slimtvm.SetBandedTripCounts")
    def _set(mod, _ctx):
        return rewrite_prim_funcs(mod, [(For, _with_trip_count)])

    return _set


def _with_trip_count(loop: For) -> For:
    annotations = loop.annotations or {}
    if ANNOTATION not in annotations:
        return loop
    oc_tile, *counts = (int(v) for v in annotations[ANNOTATION])
    realize = find_node(loop.body, lambda node: isinstance(node, SBlockRealize) and str(node.block.name_hint).startswith(BANDED_BLOCK))
    oc = task_origin(loop, realize)[1]  # the first output block of the tile, in the outer loops' terms
    extent = select_table(tuple(counts), tirx.floordiv(oc, oc_tile), loop.extent.ty.dtype)
    rest = {name: value for name, value in annotations.items() if name != ANNOTATION}
    return For(loop.loop_var, loop.min, extent, loop.kind, loop.body, loop.thread_binding, rest)
