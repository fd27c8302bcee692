"""Tensor intrinsics that transpose a small tile in registers: ``C[j, i] = A[i, j]``.

Used where a kernel computes along one axis and must write along the other: the binary conv's
popcounts are vectors of output channels per pixel, and NCHW output needs rows of pixels per
channel. Scalar code (what TVM emits for the strided reads) inserts one element at a time,
measured as 15% of ResNet-18's first binary conv. The implementation loads the ``cols`` rows
of ``A`` as vectors and shuffles them (:func:`transposed_rows`).
"""

from __future__ import annotations

from tvm import tirx
from tvm.s_tir import TensorIntrin
from tvm.script import tirx as T
from tvm.script.ir_builder import IRBuilder
from tvm.script.ir_builder.tirx import prim_func as build_prim_func

TILE_ROWS = 8  # rows of C per tile (output channels, or pixels for the sign bytes)


def transpose_intrin(cols: int, dtype: str, rows: int = TILE_ROWS) -> str:
    """The registered name of the ``rows`` × ``cols`` transpose of ``dtype`` (registered on first
    use): ``A`` is ``[cols, rows]`` and ``C`` is ``[rows, cols]``, both with a free row stride."""
    name = f"slimtvm_transpose_{rows}x{cols}_{dtype}"
    if TensorIntrin.get(name, allow_missing=True) is None:
        TensorIntrin.register(name, *_transpose_functions(rows, cols, dtype))
    return name


def _transpose_functions(rows: int, cols: int, dtype: str):
    @T.prim_func(s_tir=True)
    def description(a: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (cols, rows), dtype, offset_factor=1, strides=[T.int32(), 1])
        C = T.match_buffer(c, (rows, cols), dtype, offset_factor=1, strides=[T.int32(), 1])
        with T.sblock("root"):
            T.reads(A[0:cols, 0:rows])
            T.writes(C[0:rows, 0:cols])
            for j, i in T.grid(rows, cols):
                with T.sblock("transpose"):
                    vj, vi = T.axis.remap("SS", [j, i])
                    C[vj, vi] = A[vi, vj]

    with IRBuilder() as builder:
        with build_prim_func():
            T.func_name("implementation")
            a = T.arg("a", T.handle())
            c = T.arg("c", T.handle())
            A = T.match_buffer(a, (cols, rows), dtype, offset_factor=1, strides=[T.int32(), 1])
            C = T.match_buffer(c, (rows, cols), dtype, offset_factor=1, strides=[T.int32(), 1])
            with T.sblock("root"):
                T.reads(A[0:cols, 0:rows])
                T.writes(C[0:rows, 0:cols])
                loaded = [A.vload([i, 0], f"{dtype}x{rows}") for i in range(cols)]
                for j, row in enumerate(transposed_rows(loaded, rows, cols)):
                    T.buffer_store(C, row, [j, tirx.Ramp(0, 1, cols)])
    return description, builder.get()


def transposed_rows(loaded: list, rows: int, cols: int) -> list:
    """The ``rows`` vectors of the transpose of ``cols`` vectors of ``rows`` elements.

    Square power-of-two tiles: log2(n) rounds of interleaving vector k with vector k + n/2 (low
    halves, then high halves), each a two-input shuffle that x86 and NEON do in one instruction
    (``punpckl``/``punpckh``, ``zip1``/``zip2``); after the last round vector j is column j.
    LLVM lowered the single n-input shuffle of an 8 × 8 byte tile to 60 instructions, measured
    slower than scalar code. Other tiles: one ``cols``-input shuffle per row."""
    if rows != cols or rows & (rows - 1):
        return [tirx.Shuffle(loaded, [i * rows + j for i in range(cols)]) for j in range(rows)]
    n, half = rows, rows // 2
    vectors = list(loaded)
    for _ in range(n.bit_length() - 1):
        interleaved = []
        for k in range(half):
            pair = [vectors[k], vectors[k + half]]
            interleaved.append(tirx.Shuffle(pair, [index for e in range(half) for index in (e, n + e)]))
            interleaved.append(tirx.Shuffle(pair, [index for e in range(half, n) for index in (e, n + e)]))
        vectors = interleaved
    return vectors
