"""fp32 matmuls with a constant weight, in the dense kernel's GEMM form: the weight stored once, at
compile time, in column panels one SIMD vector wide (``[N / P, K, P]``, ``P`` the target's fp32
lanes), so that each vector of a register tile's columns reads one contiguous run down the
reduction instead of ``4 · P`` bytes every ``4 · N``.

The GEMM form (schedules/dense.py) gives each register tile ``rows`` × ``vectors`` SIMD vectors
of output columns (6 × 4 × 16 lanes on AVX-512: 64 columns; 6 × 2 × 8 on AVX2) and runs the
reduction outside the tile, so for every ``k`` it loads the tile's columns of row ``k`` of ``w``.
In ``w``'s own ``[K, N]`` layout those loads are short pieces a whole weight row apart: with ``N``
a multiple of 1024 every row of the panel falls into the same L1 sets, and otherwise the hardware
prefetchers follow hundreds of short streams badly. onnxruntime packs its weights the same way
(MLAS's packed B, 16 columns a panel). In the panel layout each of the tile's vectors reads
one run of memory: ``vectors`` sequential streams at once.

One vector per panel rather than the tile's whole width (one stream of ``4 · vectors · P``
bytes per step, sessions 38–41): with weights that the layers before evicted, the products
waited on memory, and several streams keep more reads in flight than one. Measured on Emerald
Rapids (``benchmarks/compare_builds.py``, builds in turns, 1 / 2 threads, ratio to the tile-wide
panels): a chain of eight 40 × 512 → 1376 → 512 products 0.79 / 0.96 (then 0.96 / 1.08×
onnxruntime's time, from 1.23 / 1.13); a 4-layer Llama 0.86 / 0.82 (0.94 / 0.78× onnxruntime);
GPT-2 0.89 / 0.88 (0.93 / 0.85×); ViT 0.98 / 0.95; BERT (its weights stay in cache) 0.99 /
1.02; the AVX2 build of the chain on that machine 0.88 / 0.89.
Since session 43 products of fewer rows than the GEMM form takes (a classifier at batch 1) are
packed too, for the dense family's panel form (schedules/dense.py, ``schedule_panel_matvec``):
each task streams a few panels down a range of the reduction with its accumulators in registers,
where split-K had swept 4–8 rows of ``w`` at a 4 KB stride with the partial sums in memory
(AMD Zen 4, the 1280 × 1000 classifier alone: 1.35× / 1.9× faster at 1 / 2 threads, weights in
cache; 1.6–1.7× / 2.0× read from memory). Packed here:

- a ``relax.matmul`` whose ``x`` is float32 with a static shape (batch axes, or a matrix of any
  number of rows), ``w`` a constant float32 ``[K, N]`` with ``N`` a whole number of the target's
  vectors, a float32 result.

The kernel is the same computation with the weight read as ``wp[j // P, k, j % P]``: the dense
rule schedules it (its block is ``matmul``; the GEMM form from ``GEMM_MIN_ROWS`` rows or with
batch axes, the panel form below), MetaSchedule tunes it (any tile of whole vectors reads whole
panels), and the epilogue (bias, activation) fuses into it as into the unpacked one.
The same products, summed in the same order in the GEMM form (the panel form adds its
segments' partial sums, as split-K did). Measured on Emerald Rapids with tile-wide
panels (builds in turns, 1 / 2 threads): a 50 × 768 → 3072 product 0.77× / 0.71× the unpacked
kernel's time (that one with 64 zero columns against the 4 KB aliasing), Hugging Face GPT-2
1.60× / 1.40× → 1.18× / 1.03× onnxruntime's time, torchvision ViT-B/32 0.98× / 1.41× → 0.85× /
1.01×.
"""

from __future__ import annotations

import numpy as np
from tvm import relax, te, tirx

from ..passes.constants import constant_value
from ..passes.static_shapes import static_shape
from ..schedules.dense import GEMM_MIN_ROWS, MATMUL_BLOCK
from ..schedules.stages import OUT_EWISE_FUSABLE
from .layer_records import LayerRecord


def panel_columns(columns: int, lanes: int) -> int:
    """P: one SIMD vector of a ``lanes``-wide target (the module docstring says why not the
    register tile's width), or 0 where the columns are not a whole number of vectors."""
    return 0 if columns % lanes else lanes


def packed_weight(weight: np.ndarray, panel: int) -> np.ndarray:
    """``weight`` ``[K, N]`` as ``[N / P, K, P]`` (P = ``panel``): panel ``p`` holds columns
    ``P · p … P · p + P − 1`` of every row. Refuses ``N`` that is not a multiple of ``panel``."""
    reduction, columns = weight.shape
    if panel <= 0 or columns % panel:
        raise ValueError(f"column panels of {panel} need a multiple of {panel} columns, got {columns}")
    return np.ascontiguousarray(weight.reshape(reduction, columns // panel, panel).transpose(1, 0, 2))


def packed_matmul_primfunc(x_shape, reduction: int, columns: int, panel: int):
    """The PrimFunc ``(x, wp, out)``: ``out[..., i, j] = Σ_k x[..., i, k] · wp[j // P, k, j % P]``
    for a float32 ``x`` of ``x_shape`` (P = ``panel``), marked out-element-wise fusable."""
    dims = tuple(_i64(d) for d in x_shape)
    x = te.placeholder(dims, "float32", name="x")
    wp = te.placeholder((_i64(columns // panel), _i64(reduction), _i64(panel)), "float32", name="packed_weight")
    k = te.reduce_axis((_i64(0), _i64(reduction)), name="k")

    def product(*index):
        *outer, j = index
        return te.sum(x[(*outer, k)] * wp[j // _i64(panel), k, j % _i64(panel)], axis=k)

    out = te.compute((*dims[:-1], _i64(columns)), product, name=MATMUL_BLOCK)
    return te.create_prim_func([x, wp, out]).with_attr("op_pattern", OUT_EWISE_FUSABLE).without_attr("global_symbol")


def _i64(value: int):
    """An int64 constant: Relax's shapes are int64 (FuseTIR matches buffers to tensors by type)."""
    return tirx.IntImm("int64", value)


class PackedMatmuls:
    """The packing of one build for a ``lanes``-wide target; ``count`` says how many matmuls it
    took (reset by :meth:`start`)."""

    def __init__(self, lanes: int):
        self.lanes = lanes
        self.count = 0

    def start(self) -> None:
        self.count = 0

    def packable(self, call) -> tuple:
        """``(x shape, [K, N] weight, P)`` of a ``relax.matmul`` the module docstring packs, else None."""
        if getattr(call.op, "name", "") != "relax.matmul" or str(getattr(call.ty, "dtype", "")) != "float32":
            return None
        shape = static_shape(call.args[0], "float32")
        weight = constant_value(call.args[1])
        if shape is None or len(shape) < 2 or weight is None or weight.dtype != np.float32 or weight.ndim != 2 or weight.shape[0] != shape[-1]:
            return None
        panel = panel_columns(weight.shape[1], self.lanes)
        return (shape, weight, panel) if panel else None

    def lower(self, builder, call):
        """``(kernel call, LayerRecord)`` for a matmul :meth:`packable` takes, else None."""
        taken = self.packable(call)
        if taken is None:
            return None
        shape, weight, panel = taken
        reduction, columns = weight.shape
        gvar = builder.add_func(packed_matmul_primfunc(shape, reduction, columns, panel), "packed_matmul")
        self.count += 1
        form = "fp32 matmul, GEMM kernel" if len(shape) > 2 or shape[0] >= GEMM_MIN_ROWS else "fp32 dense, matrix-vector kernel"
        record = LayerRecord("matmul", "dense", f"{form} (register tiles), weight in {panel}-column panels")
        out = relax.TensorType([*shape[:-1], columns], "float32")
        return relax.call_tir(gvar, [call.args[0], relax.const(packed_weight(weight, panel))], out), record
