"""Tensor intrinsics that fold one vector of a window's input into a vector of running sums or
maxima: ``C[0:lanes] = C[0:lanes] + A[0:lanes]`` (or ``max``), as one vector load, add (or max)
and store.

Pooling in a blocked layout (schedules/generic_cpu.py) keeps the channel block's lanes innermost,
under the window's reduction loops, and TIR does not vectorize a loop of a reduction block. Left
unrolled for LLVM's SLP pass, the pools of windows without padding were vectorized across the
row's output pixels instead, with gathers and scatters (Zen 5, 1 thread, input in cache): Bi-Real
Net 18's 2×2 average pool of 64 × 56 × 56 ran 47 µs (8 µs with this), QuickNet's 2×2 stride-1
max-pool of 64 × 56 × 56 177 µs. Pools with padding checks keep the unrolled form, which LLVM
turned into vector maxima.
"""

from __future__ import annotations

from contextlib import contextmanager

from tvm import tirx
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T
from tvm.script.ir_builder import IRBuilder
from tvm.script.ir_builder.tirx import prim_func as build_prim_func

COMBINE = {"add": lambda a, b: a + b, "max": tirx.max}  # the running value, the new one


def accumulate_intrin(lanes: int, dtype: str = "float32", combine: str = "add") -> str:
    """The registered name of ``C[0:lanes] = combine(C[0:lanes], A[0:lanes])`` for ``dtype`` and
    ``combine`` (``add`` or ``max``; registered on first use); both buffers contiguous."""
    if combine not in COMBINE:
        raise ValueError(f"accumulate by {combine!r}: only {sorted(COMBINE)}")
    name = f"slimtvm_accumulate_{combine}_{lanes}_{dtype}"
    if TensorIntrin.get(name, allow_missing=True) is None:
        TensorIntrin.register(name, _description(lanes, dtype, COMBINE[combine]), _implementation(lanes, dtype, COMBINE[combine]))
    return name


@contextmanager
def _intrinsic_function(name: str, lanes: int, dtype: str):
    """The frame of one of the intrinsic's functions, inside its root block: yields (builder,
    C, A); ``builder.get()`` after the ``with`` is the function."""
    with IRBuilder() as builder:
        with build_prim_func():
            T.func_name(name)
            C = T.match_buffer(T.arg("c", T.handle()), (lanes,), dtype, offset_factor=1)
            A = T.match_buffer(T.arg("a", T.handle()), (lanes,), dtype, offset_factor=1)
            with T.sblock("root"):
                T.reads(C[0:lanes], A[0:lanes])
                T.writes(C[0:lanes])
                yield builder, C, A


def _description(lanes: int, dtype: str, combine):
    with _intrinsic_function("description", lanes, dtype) as (builder, C, A):
        with T.serial(lanes) as i:
            with T.sblock("accumulate"):
                vi = T.axis.spatial(lanes, i)
                T.reads(C[vi], A[vi])
                T.writes(C[vi])
                T.buffer_store(C, combine(C[vi], A[vi]), [vi])
    return builder.get()


def _implementation(lanes: int, dtype: str, combine):
    with _intrinsic_function("implementation", lanes, dtype) as (builder, C, A):
        vector = f"{dtype}x{lanes}"
        T.buffer_store(C, combine(C.vload([0], vector), A.vload([0], vector)), [tirx.Ramp(0, 1, lanes)])
    return builder.get()
