"""The frame of a kernel written whole with TVM's IR builder: one block under the root, its
parallel loop inside, flat views of its input and output.

The relayout and channel-permutation kernels (schedules/channel_relayout.py,
schedules/channel_permutation.py) are written this way: the generic rule leaves such a function
as it is, and ``tune --all-kernels`` leaves it out (each file's ``is_…`` test finds its block).
"""

from __future__ import annotations

import math
from contextlib import contextmanager

from tvm.script import tirx as T
from tvm.script.ir_builder import IRBuilder
from tvm.script.ir_builder.tirx import prim_func as build_prim_func

OPAQUE = 8  # TVM's OpPatternKind kOpaque: never fused with its neighbours (as TVM's relayouts)


@contextmanager
def whole_kernel(name: str, source_shape: tuple, dest_shape: tuple):
    """Build the PrimFunc ``name(x, out)`` (float32 ``x`` of ``source_shape``, ``out`` of
    ``dest_shape``): yields ``(builder, source, dest)``, flat views of ``x`` and ``out`` for the
    body to index; ``builder.get()`` after the block is the function."""
    with IRBuilder() as builder:
        with build_prim_func():
            T.func_name(name)
            T.func_attr({"op_pattern": OPAQUE, "tirx.noalias": True})
            x_handle, out_handle = T.arg("x", T.handle()), T.arg("out", T.handle())
            x = T.match_buffer(x_handle, [T.int64(d) for d in source_shape], "float32")
            out = T.match_buffer(out_handle, [T.int64(d) for d in dest_shape], "float32")
            with T.sblock("root"):
                with T.sblock(name):
                    T.reads(x[tuple(slice(0, d) for d in source_shape)])
                    T.writes(out[tuple(slice(0, d) for d in dest_shape)])
                    source = T.decl_buffer((math.prod(source_shape),), "float32", data=x.data)
                    dest = T.decl_buffer((math.prod(dest_shape),), "float32", data=out.data)
                    yield builder, source, dest
