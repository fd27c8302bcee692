"""fp32 3×3 stride-1 conv2d by Winograd's minimal filtering F(m × m, 3 × 3), m = 2 or 4, in NCHW[x]c;
and a stride-2 stem (≤ 4 input channels) as F(m × m, ⌈k/2⌉ × ⌈k/2⌉) of its 4 input phases.

Each m × m block of output pixels (a *tile*) is computed from the (m + 2)² input window around it
as ``Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`` (Lavin & Gray, 2016): (m + 2)² multiply-adds per input
channel and tile instead of 9 m², so 2.25× (F(2×2)) or 4× (F(4×4)) fewer than a direct
convolution. Stages, in one PrimFunc:

- ``winograd_input`` (``Bᵀ d B``): ``V[ξ, ν, tile, c]`` for the (m + 2)² positions ``(ξ, ν)``,
  vectorized over the channel block;
- ``winograd_gemm``: for each position a matrix product ``M[ξ, ν] = V[ξ, ν] · U[ξ, ν]``
  (tiles × input channels times input × output channels), with the weights transformed once,
  at compile time (``U = G g Gᵀ``, :func:`winograd_weights`). Its register tile is ``px`` tiles ×
  ``oc_tile`` output channel blocks, as in the direct kernel (conv2d_nchwc.py): one input value
  broadcast (AVX-512: an embedded broadcast of the FMA) against one vector of weights;
- ``winograd_output`` (``Aᵀ M A``): the m × m output pixels of each tile, and the fused epilogue
  (bias, residual add, activation) inlined into it.

The transforms are written as select chains on the (unrolled) position indices, each row the
sum of its nonzero terms, so no multiplication by 0 or ±1 is generated (:func:`_combination`).
Each runs in two passes, rows then columns (``Bᵀ d``, then ``(Bᵀ d) B``; ``Aᵀ M``, then
``(Aᵀ M) A``), through small per-tile stages (``winograd_window``, ``winograd_input_rows``,
``winograd_output_rows``). Written as one nested expression per position, the F(4×4) kernel took
TVM's simplifier and LLVM 14 s to compile for one 20×20 conv and 78 s for a 19×21 one (whose
partial tiles keep a bounds test on every window load), ResNet-18 37 s; in passes 2.4 s, 2.5 s
and 11 s, and the kernels in ResNet-18 ran as fast or faster (Zen 4, per kernel, 1 thread).
Rounding: F(2×2, 3×3)'s coefficients are 0, ±1 and ±½ (exact in binary), and the results stay
within a few 1e-7 of a direct convolution; F(4×4, 3×3) (interpolation points 0, ±1, ±2) has
input coefficients up to 5 and output ones up to 8: 7e-6 – 1.3e-5 of the output's largest
magnitude on ResNet-18's shapes alone with random weights (``benchmarks/conv_layers.py``), 7e-7
on the whole ResNet-18 (tests/test_winograd.py checks against onnxruntime).
lowering/winograd_layers.py chooses m per image size.

Stride-2 stems (:class:`PhasedInput`): a k × k stride-2 conv is the sum over the 4 phases
``x[2i + a, 2j + b]`` (a, b ∈ {0, 1}) of stride-1 convs with the ⌈k/2⌉ × ⌈k/2⌉ kernels
``w[2u + a, 2v + b]``; with at most 4 input channels the phases fill one 16-lane block (two
8-lane ones on AVX2), so the kernel's first stage (``winograd_phases``) writes them, zero-padded,
as an NCHW[x]c image, and the stages above run unchanged on it (no padding: the phases carry
it), with the product reducing over the 4 · C real phase channels only. ResNet's 7 × 7 stem (3 → 64 channels) runs as
F(4×4, 4×4) (points 0, ±1, ±2, ½, ∞): 49 · 12 multiply-adds per 16 pixels and output channel
instead of 147 · 16 (4× fewer); with the transforms, measured on Zen 4 (1 thread, one-conv model,
kernel alone) 2.22 → 1.14 ms. YOLOv5's 6 × 6 stem takes F(4×4, 3×3) this way.

F(2×2) measured on Zen 5 (AVX-512, 1 thread, kernel alone, warm weights; ms, against the direct
kernel): ResNet-18's 64 channels at 56×56 0.52 (0.90), 128 at 28×28 0.44 (0.87), 256 at 14×14
0.41 (0.86); 512 at 7×7 0.68–0.74 (0.86 warm, but 16.7 MB of transformed weights, where the
direct kernel's 9.4 MB already wait on memory in a whole network): see
lowering/winograd_layers.py for which convs take it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm import s_tir, te, tirx, topi

from .cpu_rule import CPURule
from .stages import MIN_ACCUMULATORS, MIN_PARALLEL_CHUNKS, OUT_EWISE_FUSABLE, categorical, fewest_parts, max_accumulators

WINDOW_BLOCK = "winograd_window"  # the (m + 2)² input window of each tile, padding applied
INPUT_ROWS_BLOCK = "winograd_input_rows"  # Bᵀ d
INPUT_BLOCK = "winograd_input"  # (Bᵀ d) B
GEMM_BLOCK = "winograd_gemm"
PREFETCH_ANNOTATION = "slimtvm.prefetch_next_winograd_weights"  # read by lowering/weight_prefetch.py
OUTPUT_ROWS_BLOCK = "winograd_output_rows"  # Aᵀ M
OUTPUT_BLOCK = "winograd_output"  # (Aᵀ M) A
PHASE_BLOCK = "winograd_phases"  # a stride-2 conv's input split into its 4 phases (phased_input)


@dataclass(frozen=True)
class WinogradTransform:
    """F(m × m, r × r): ``Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`` for ``m × m`` output tiles from
    ``(m + r − 1) × (m + r − 1)`` input windows (Lavin & Gray, 2016)."""

    tile: int  # m
    input_t: tuple  # Bᵀ, window × window
    weight: tuple  # G, window × r
    output_t: tuple  # Aᵀ, m × window

    @property
    def kernel(self) -> int:
        """r: the kernel side."""
        return len(self.weight[0])

    @property
    def window(self) -> int:
        return self.tile + self.kernel - 1


TRANSFORMS = {  # (m, r): the transform
    (2, 3): WinogradTransform(
        2,
        ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1)),
        ((1, 0, 0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0, 0, 1)),
        ((1, 1, 1, 0), (0, 1, -1, -1)),
    ),
    # interpolation points 0, ±1, ±2 and ∞
    (4, 3): WinogradTransform(
        4,
        ((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0), (0, -2, -1, 2, 1, 0), (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1)),
        ((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6), (1 / 24, 1 / 12, 1 / 6), (1 / 24, -1 / 12, 1 / 6), (0, 0, 1)),
        ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1)),
    ),
    # a 4 × 4 kernel (the phases of a stride-2 7 × 7 conv, :func:`phase_weights`): points 0, ±1, ±2,
    # ½ and ∞. 49 positions per 16 pixels instead of F(3×3, 4×4)'s 36 per 9 (6 points), and its
    # larger transforms still cost less: ResNet-18's stem 1.27 → 1.14 ms (Zen 4, 1 thread, one-conv
    # model), its output within 2.8e-6 of onnxruntime's (F(3×3, 4×4), tried first and dropped: 1.4e-6)
    (4, 4): WinogradTransform(
        4,
        (
            (-2, 4, 5 / 2, -5, -1 / 2, 1, 0),
            (0, 2, -2, -9 / 2, 1 / 2, 1, 0),
            (0, -2, 6, -7 / 2, -3 / 2, 1, 0),
            (0, 1, -3 / 2, -2, 3 / 2, 1, 0),
            (0, -1, 5 / 2, 0, -5 / 2, 1, 0),
            (0, 4, 0, -5, 0, 1, 0),
            (0, -2, 4, 5 / 2, -5, -1 / 2, 1),
        ),
        (
            (-1 / 2, 0, 0, 0),
            (-1 / 3, -1 / 3, -1 / 3, -1 / 3),
            (1 / 9, -1 / 9, 1 / 9, -1 / 9),
            (1 / 36, 1 / 18, 1 / 9, 2 / 9),
            (-1 / 60, 1 / 30, -1 / 15, 2 / 15),
            (32 / 45, 16 / 45, 8 / 45, 4 / 45),
            (0, 0, 0, 1),
        ),
        ((1, 1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 1 / 2, 0), (0, 1, 1, 4, 4, 1 / 4, 0), (0, 1, -1, 8, -8, 1 / 8, 1)),
    ),
}


@dataclass(frozen=True)
class PhasedInput:
    """The plain NCHW input (``channels`` × ``height`` × ``width``, zero-padded by ``padding`` on
    every side) of a stride-2 k × k conv, which the kernel splits into its 4 phases
    ``x[c, 2i + a − padding, 2j + b − padding]`` (a, b ∈ {0, 1}), channel ``(2a + b) · channels + c``
    of as many channel blocks as they fill: the conv is then a stride-1 conv of the phases with
    ⌈k / 2⌉ × ⌈k / 2⌉ kernels (:func:`phase_weights`), without padding, that Winograd's
    F(m × m, ⌈k / 2⌉ × ⌈k / 2⌉) computes."""

    channels: int
    height: int
    width: int
    padding: int


@dataclass(frozen=True)
class WinogradShape:
    """A conv of ``channels → out_channels`` on ``batch`` images of ``height × width``, 3×3,
    stride 1, padding 1, in blocks of ``block`` channels, computed in ``tile × tile`` output
    tiles (F(2×2, 3×3) or F(4×4, 3×3), :data:`TRANSFORMS`)."""

    batch: int
    channels: int
    out_channels: int
    height: int
    width: int
    block: int
    tile: int = 2
    kernel: int = 3  # r
    phased: PhasedInput | None = None  # a stride-2 conv's plain input (then ``channels`` is ``block``)

    @property
    def transform(self) -> WinogradTransform:
        return TRANSFORMS[(self.tile, self.kernel)]

    @property
    def tile_rows(self) -> int:
        return -(-self.height // self.tile)

    @property
    def tile_cols(self) -> int:
        return -(-self.width // self.tile)

    @property
    def tiles(self) -> int:
        return self.batch * self.tile_rows * self.tile_cols

    @property
    def transformed_weight_shape(self) -> tuple:
        """``[ξ, ν, output block, input block, input channel, output channel]``."""
        b, w = self.block, self.transform.window
        return (w, w, self.out_channels // b, self.channels // b, b, b)


def winograd_weights(weight: np.ndarray, block: int, tile: int = 2) -> np.ndarray:
    """``U = G g Gᵀ`` of an OIHW r × r ``weight`` for F(tile × tile, r × r) (:data:`TRANSFORMS`),
    computed in float64 and rounded once, in the layout of
    :attr:`WinogradShape.transformed_weight_shape`. Refuses kernel sizes without a transform for
    ``tile`` and channel counts that are not a multiple of ``block``."""
    out_channels, channels, kh, kw = weight.shape
    if kh != kw or (tile, kh) not in TRANSFORMS or channels % block or out_channels % block:
        raise ValueError(
            f"Winograd F({tile}×{tile}, r×r) needs a square kernel it has a transform for (3×3; 4×4 with 3×3 tiles) with whole {block}-channel blocks, got {weight.shape}"
        )
    transform = TRANSFORMS[(tile, kh)]
    g = np.array(transform.weight, dtype=np.float64)
    u = np.einsum("er,kcrs,ns->enkc", g, weight.astype(np.float64), g)
    window = transform.window
    u = u.reshape(window, window, out_channels // block, block, channels // block, block).transpose(0, 1, 2, 4, 5, 3)
    return np.ascontiguousarray(u.astype(np.float32))


def phase_weights(weight: np.ndarray, block: int) -> np.ndarray:
    """The OIHW weights of the stride-1 conv of a stride-2 conv's 4 input phases
    (:class:`PhasedInput`): ``[O, ⌈4C / block⌉ · block, ⌈k / 2⌉, ⌈k / 2⌉]`` with
    ``w[o, (2a + b) · C + c, u, v] = weight[o, c, 2u + a, 2v + b]`` (zero past the kernel's edge,
    and in the channels past 4 · C)."""
    out_channels, channels, kh, kw = weight.shape
    half_h, half_w = -(-kh // 2), -(-kw // 2)
    phased = np.zeros((out_channels, -(-4 * channels // block) * block, half_h, half_w), dtype=weight.dtype)
    for a in range(2):
        for b in range(2):
            taps = weight[:, :, a::2, b::2]
            lanes = slice((2 * a + b) * channels, (2 * a + b + 1) * channels)
            phased[:, lanes, : taps.shape[2], : taps.shape[3]] = taps
    return phased


def phased_input(data, shape: WinogradShape):
    """TE stage: ``data`` (plain NCHW) as the 4 phases of :class:`PhasedInput` in one channel
    block, zero where the padding or the tiles' overhang reads past the image, or past 4 · C."""
    p, r = shape.phased, shape.kernel
    rows, cols = shape.tile_rows * shape.tile + r - 1, shape.tile_cols * shape.tile + r - 1

    def value(n, block, i, j, lane):
        index = block * shape.block + lane  # (2a + b) · C + c
        phase, channel = index // p.channels, index % p.channels
        y, x = 2 * i + phase // 2 - p.padding, 2 * j + phase % 2 - p.padding
        inside = tirx.all(index < 4 * p.channels, y >= 0, y < p.height, x >= 0, x < p.width)
        clamp_y, clamp_x = tirx.max(tirx.min(y, p.height - 1), 0), tirx.max(tirx.min(x, p.width - 1), 0)
        return tirx.if_then_else(inside, data[n, tirx.min(channel, p.channels - 1), clamp_y, clamp_x], tirx.const(0.0, data.dtype))

    return te.compute(_i64(shape.batch, shape.channels // shape.block, rows, cols, shape.block), value, name=PHASE_BLOCK)


def _combination(coefficients, values):
    """``Σ c · v`` over the nonzero coefficients, left to right: ±1 as an addition or a
    subtraction (no multiplication by ±1 or 0 is generated), others as a product by a constant."""
    total = None
    for c, v in zip(coefficients, values):
        if c == 0:
            continue
        term = v if abs(c) == 1 else v * tirx.const(float(abs(c)), "float32")
        if total is None:
            total = term if c > 0 else -term
        else:
            total = total + term if c > 0 else total - term
    return total


def _transform_rows(matrix, index, values):
    """Row ``index`` (a loop variable, unrolled later) of ``matrix · values``: a select chain
    over the rows, which the simplifier folds to one row once ``index`` is a constant."""
    rows = [_combination(row, values) for row in matrix]
    chosen = rows[-1]
    for i in range(len(rows) - 2, -1, -1):
        chosen = tirx.Select(index == i, rows[i], chosen)
    return chosen


def winograd_conv2d_nchwc(data, weights, shape: WinogradShape, out_dtype: str = "float32"):
    """TE compute (module docstring): ``data`` ``[N, C/x, H, W, x]``, ``weights`` the transformed
    ``U``; returns the NCHW[x]c output."""
    s, t = shape, shape.transform
    m, window_size = t.tile, t.window
    rows, cols = s.tile_rows, s.tile_cols
    if s.phased is None:  # a "same" 3 × 3 conv: padding 1 before, the tiles' overhang after
        padded = topi.nn.pad(data, _i64(0, 0, 1, 1, 0), _i64(0, 0, m * rows + 1 - s.height, m * cols + 1 - s.width, 0), name="data_pad")
    else:
        padded = phased_input(data, s)

    def window(r, c, tile, block, lane):
        image, rest = tile // (rows * cols), tile % (rows * cols)
        return padded[image, block, rest // cols * m + r, rest % cols * m + c, lane]

    # each transform in two passes, rows then columns (compile time: see the module docstring)
    windows = te.compute(_i64(window_size, window_size, s.tiles, s.channels // s.block, s.block), window, name=WINDOW_BLOCK)
    input_rows = te.compute(
        _i64(window_size, window_size, s.tiles, s.channels // s.block, s.block),
        lambda xi, c, tile, block, lane: _transform_rows(t.input_t, xi, [windows[r, c, tile, block, lane] for r in range(window_size)]),
        name=INPUT_ROWS_BLOCK,
    )
    v = te.compute(
        _i64(window_size, window_size, s.tiles, s.channels // s.block, s.block),
        lambda xi, nu, tile, block, lane: _transform_rows(t.input_t, nu, [input_rows[xi, c, tile, block, lane] for c in range(window_size)]),
        name=INPUT_BLOCK,
    )
    if s.phased is None:
        block_r = te.reduce_axis(_i64(0, s.channels // s.block), name="ic_block")
        lane_r = te.reduce_axis(_i64(0, s.block), name="ic_lane")

        def channel(block, lane):
            return block, lane

    else:  # a stride-2 conv's 4 · C phase channels, in one block or across two: the product skips the zero ones
        block_r = te.reduce_axis(_i64(0, 1), name="ic_block")
        lane_r = te.reduce_axis(_i64(0, 4 * s.phased.channels), name="ic_lane")

        def channel(block, lane):
            return block + lane // s.block, lane % s.block

    product = te.compute(
        _i64(window_size, window_size, s.tiles, s.out_channels // s.block, s.block),
        lambda xi, nu, tile, oc, lane: te.sum(
            v[(xi, nu, tile) + channel(block_r, lane_r)].astype(out_dtype) * weights[(xi, nu, oc) + channel(block_r, lane_r) + (lane,)].astype(out_dtype),
            axis=[block_r, lane_r],
        ),
        name=GEMM_BLOCK,
    )
    output_rows = te.compute(
        _i64(m, window_size, s.tiles, s.out_channels // s.block, s.block),
        lambda y, nu, tile, oc, lane: _transform_rows(t.output_t, y, [product[xi, nu, tile, oc, lane] for xi in range(window_size)]),
        name=OUTPUT_ROWS_BLOCK,
    )

    def output(n, oc, y, x, lane):
        tile = (n * rows + y // m) * cols + x // m
        return _transform_rows(t.output_t, x % m, [output_rows[y % m, nu, tile, oc, lane] for nu in range(window_size)])

    return te.compute(_i64(s.batch, s.out_channels // s.block, s.height, s.width, s.block), output, name=OUTPUT_BLOCK)


def _i64(*dims) -> tuple:
    """Dims as int64, as Relax's shapes are (FuseTIR matches buffers to Relax tensors by type)."""
    return tuple(tirx.IntImm("int64", d) for d in dims)


def winograd_conv2d_primfunc(shape: WinogradShape):
    """The PrimFunc ``(x, U, out)`` of :func:`winograd_conv2d_nchwc`, marked out-element-wise
    fusable (the bias, residual add and activation after it fuse into it)."""
    if shape.phased is None:
        data = te.placeholder(_i64(shape.batch, shape.channels // shape.block, shape.height, shape.width, shape.block), "float32", name="data")
    else:
        p = shape.phased
        data = te.placeholder(_i64(shape.batch, p.channels, p.height, p.width), "float32", name="data")
    weights = te.placeholder(_i64(*shape.transformed_weight_shape), "float32", name="winograd_weights")
    out = winograd_conv2d_nchwc(data, weights, shape)
    return te.create_prim_func([data, weights, out]).with_attr("op_pattern", OUT_EWISE_FUSABLE).without_attr("global_symbol")


@dataclass(frozen=True)
class WinogradTile:
    """The product's register tile: ``px`` tiles × ``oc_tile`` output channel blocks."""

    px: int
    oc_tile: int


def default_winograd_tile(tiles: int, oc_blocks: int, lanes: int = 16) -> WinogradTile:
    """Two output blocks (one when they are odd) × the most tiles that divide the tile count and
    keep ``px · oc_tile`` accumulators within 28 of the 32 zmm registers (the broadcast operand is
    embedded in the FMA; two hold the weight vectors). Measured on Zen 5, 1 thread: 14 × 2 at
    56×56 and 28×28, 7 × 2 at 14×14 (px = 16 at 56×56, which does not divide 784, took 0.82 ms
    against 0.52; 4 output blocks 1.15 against 0.44 at 28×28). Where a task has so few tiles
    that this leaves fewer than :data:`MIN_ACCUMULATORS` (a banded task of two tiles:
    :func:`band_columns`), four output blocks when they divide; where that still leaves fewer (a
    prime tile count), one output block and up to 28 tiles."""
    budget = max_accumulators(lanes)
    oc_tile = 2 if oc_blocks % 2 == 0 else 1
    px = _most_tiles(tiles, oc_tile, budget)
    if px * oc_tile < MIN_ACCUMULATORS and oc_blocks % 4 == 0:
        oc_tile = 4
        px = _most_tiles(tiles, oc_tile, budget)
    if px * oc_tile < MIN_ACCUMULATORS and _most_tiles(tiles, 1, budget) > px * oc_tile:
        oc_tile, px = 1, _most_tiles(tiles, 1, budget)  # a prime tile count (19 in a 112-wide stem's band)
    return WinogradTile(px, oc_tile)


def _most_tiles(tiles: int, oc_tile: int, budget: int) -> int:
    """The most tiles that divide ``tiles`` and fit ``budget`` accumulators with ``oc_tile`` blocks."""
    return max(d for d in range(1, min(budget // oc_tile, tiles) + 1) if tiles % d == 0)


def band_columns(bands: int, cols: int) -> int:
    """Tile columns per banded task (a part of one tile row): the most that divide ``cols`` and
    still leave :data:`MIN_PARALLEL_CHUNKS` tasks over the ``bands`` (images × tile rows); where
    none does, the fewest that divide and are at least 2 (a lone tile leaves the product too few
    accumulators), ``cols`` itself when it is prime."""
    parts = fewest_parts(cols, bands)
    if bands * parts >= MIN_PARALLEL_CHUNKS:
        return cols // parts
    return min([d for d in range(2, cols + 1) if cols % d == 0] or [cols])


def tile_group(groups: int, tiles: int, largest: int) -> int:
    """Tiles per parallel chunk of a stage-wise transform: ``largest``, halved (rounding down)
    until the ``tiles`` in such chunks, times the ``groups`` the chunk loop also runs over, make
    :data:`MIN_PARALLEL_CHUNKS` chunks (1 if none does; the last chunk may be partial)."""
    size = largest
    while size > 1 and groups * -(-tiles // size) < MIN_PARALLEL_CHUNKS:
        size //= 2
    return size


BANDED_MAX_WEIGHT_BYTES = 1024 * 1024


def schedule_winograd(sch: s_tir.Schedule, px: int, oc_tile: int) -> None:
    """Schedule the (fused) PrimFunc in ``sch``: the padding inlined into the window stage, the
    window and row passes of both transforms computed per tile (:func:`_per_tile`), the input
    transform (the (m + 2)² positions unrolled, lanes vectorized), the product with a ``px`` × ``oc_tile``
    register tile (``px`` must divide :func:`product_tiles`, ``oc_tile`` the output blocks), the
    output transform with its epilogue (the m × m pixels of a tile unrolled).

    Banded (:func:`is_banded`: transformed weights within :data:`BANDED_MAX_WEIGHT_BYTES`, so
    they stay in L2): parallel over bands of a tile row (m output rows; :func:`band_columns` tiles
    of it, so that there are 64 bands for 16 threads: 2 of the 14 on ResNet-18's 56×56 layers,
    where whole tile rows gave 14 bands), each band transforming its input, multiplying and
    transforming its output while ``V`` and ``M`` ((m + 2)² × the band's input and output) are in
    L2. Measured on Zen 5 (ms, 1 / 2 threads): 64 channels
    at 56×56 0.52 / 0.46 → 0.45 / 0.23, 128 at 28×28 0.42 / 0.30 → 0.41 / 0.21; with 256 at
    14×14 (4.2 MB of weights, read again by every band) 0.41 / 0.22 → 0.41 / 0.26, so larger
    weights run stage by stage: the input transform parallel over groups of up to 8 tiles ×
    channel blocks, the product over positions × output-block tiles, the output over images ×
    tile rows × groups of tiles in the row × output blocks (both groups as small as
    :func:`tile_group` needs for 64 chunks). Both transforms run the image's tiles outside the
    channel blocks, so each thread reads and writes a band of rows, as the 1×1 convs and pools
    around them do (:func:`~.stages.spatial_partition`): with channel blocks outermost each core
    read every row of its channels, half of them written by the other core (session 50, Emerald
    Rapids, per kernel in the model, builds in turns, 2 threads: ResNet-18's 28 × 28 convs
    429–480 → 388–434 µs in two runs, ResNet-50's 442–498 → 424–442; 14 × 14 0–8% faster, 7 × 7
    within the noise; 1 thread no slower). There each task of the product reads its slice of the weights from
    memory once and prefetches the next task's slice, spread over its steps
    (``lowering/weight_prefetch.py``): 256 channels at 14×14 in ResNet-18, whose 4.2 MB of
    transformed weights come from memory, 0.58 → 0.43 ms per conv (its warm-weights time).

    Tried (session 40, Emerald Rapids): the stage-wise input transform in two parts of its rows ξ,
    outermost, so that with 2 threads each core multiplies the half of ``V`` it transformed (the
    product runs ξ first). perf's CPU samples showed the product's cross-core reads gone, but in
    turns ResNet-18's 28 × 28 convs ran no faster at 2 threads (565–574 µs either way): each core
    then reads the whole input, half of it written by the other core — 200 KB per core against the
    225 KB of ``V`` it saved. Not kept."""
    root = sch.get_sblock("root")
    names = [sch.get(block).name_hint for block in sch.get_child_blocks(root)]
    for name in names:
        if name.startswith("data_pad"):
            sch.compute_inline(sch.get_sblock(name))
    names = [sch.get(block).name_hint for block in sch.get_child_blocks(root)]
    if PHASE_BLOCK in names:  # a stage of its own, before the tiles, whose windows overlap
        row_task_loops = sch.get_loops(sch.get_sblock(PHASE_BLOCK))
        sch.parallel(sch.fuse(*row_task_loops[:3]))
        sch.unroll(row_task_loops[4])
    for name in names[names.index(OUTPUT_BLOCK) : -1]:
        sch.compute_inline(sch.get_sblock(name))
    out = sch.get_sblock(names[-1])
    transform, gemm = sch.get_sblock(INPUT_BLOCK), sch.get_sblock(GEMM_BLOCK)
    banded = is_banded(sch)

    m = output_tile(sch)
    n, oc, y, x, lane = sch.get_loops(out)
    y_outer, y_inner = sch.split(y, [None, m])
    x_outer, x_inner = sch.split(x, [None, m])
    bands = int(sch.get(n).extent) * int(sch.get(y_outer).extent)  # images × tile rows
    cols = int(sch.get(x_outer).extent)
    if banded:
        x_group, x_outer = sch.split(x_outer, [None, band_columns(bands, cols)])
        sch.reorder(n, y_outer, x_group, oc, x_outer, y_inner, x_inner, lane)
        task = sch.fuse(n, y_outer, x_group)
    else:
        blocks = int(sch.get(oc).extent)
        x_group, x_outer = sch.split(x_outer, [None, tile_group(bands * blocks, cols, cols)])
        sch.reorder(n, y_outer, x_group, oc, x_outer, y_inner, x_inner, lane)
        task = sch.fuse(n, y_outer, x_group, oc)
    sch.parallel(task)
    sch.unroll(y_inner)
    sch.unroll(x_inner)
    sch.vectorize(lane)
    _per_tile(sch, sch.get_sblock(OUTPUT_ROWS_BLOCK), x_outer)
    if banded:
        sch.compute_at(gemm, task, preserve_unit_loops=True)
        sch.compute_at(transform, task, preserve_unit_loops=True)

    xi, nu, tile, block, lane = sch.get_loops(transform)[-5:]
    if banded:
        sch.reorder(tile, block, xi, nu, lane)
        one_tile = block
    else:
        group = tile_group(int(sch.get(block).extent), int(sch.get(tile).extent), 8)
        tile_outer, tile_inner = sch.split(tile, [None, group])
        sch.reorder(tile_outer, block, tile_inner, xi, nu, lane)
        sch.parallel(sch.fuse(tile_outer, block))
        one_tile = tile_inner
    sch.unroll(xi)
    sch.unroll(nu)
    sch.vectorize(lane)
    _per_tile(sch, sch.get_sblock(INPUT_ROWS_BLOCK), one_tile)
    _per_tile(sch, sch.get_sblock(WINDOW_BLOCK), one_tile)

    xi, nu, tile, oc, lane, block_r, lane_r = sch.get_loops(gemm)[-7:]
    oc_outer, oc_inner = sch.split(oc, [None, oc_tile])
    tile_outer, tile_inner = sch.split(tile, [None, px])
    sch.reorder(xi, nu, oc_outer, tile_outer, block_r, lane_r, tile_inner, oc_inner, lane)
    if not banded:
        sch.parallel(sch.fuse(xi, nu, oc_outer))
        # large weights (≥ 1 MB; read from memory once per task): prefetch the next task's
        sch.annotate(block_r, PREFETCH_ANNOTATION, [oc_tile, px, int(sch.get(tile_outer).extent)])
    sch.unroll(tile_inner)
    sch.unroll(oc_inner)
    sch.vectorize(lane)
    sch.decompose_reduction(gemm, block_r)


def _per_tile(sch: s_tir.Schedule, block, loop) -> None:
    """Compute the transform stage ``block`` (two position axes, then tile, channel block and
    lane) for one tile and channel block under ``loop``: positions unrolled, lanes vectorized.
    Its buffer shrinks to one tile's (TVM allocates it once per parallel task, in L1)."""
    sch.compute_at(block, loop)
    first, second, lane = sch.get_loops(block)[-3:]
    sch.unroll(first)
    sch.unroll(second)
    sch.vectorize(lane)


def is_banded(sch: s_tir.Schedule) -> bool:
    """Whether the transformed weights fit :data:`BANDED_MAX_WEIGHT_BYTES` (see :func:`schedule_winograd`)."""
    weights = sch.get(sch.get_sblock(GEMM_BLOCK)).reads[1].source
    return int(np.prod([int(d) for d in weights.shape])) * 4 <= BANDED_MAX_WEIGHT_BYTES


def product_tiles(sch: s_tir.Schedule) -> tuple:
    """(tiles per product task, output channel blocks): one band's tile row when banded, else
    every tile of the batch."""
    block = sch.get_sblock(GEMM_BLOCK)
    loops = sch.get_loops(block)
    tiles, oc_blocks = int(sch.get(loops[2]).extent), int(sch.get(loops[3]).extent)
    if is_banded(sch):
        out = sch.get(sch.get_sblock(OUTPUT_BLOCK)).writes[0].source
        m = output_tile(sch)
        bands = int(out.shape[0]) * -(-int(out.shape[2]) // m)
        tiles = band_columns(bands, -(-int(out.shape[3]) // m))
    return tiles, oc_blocks


def output_tile(sch: s_tir.Schedule) -> int:
    """m of the F(m × m, r × r) kernel in ``sch``: the rows of its output transform's first pass."""
    return int(sch.get(sch.get_sblock(OUTPUT_ROWS_BLOCK)).writes[0].source.shape[0])


class WinogradConv(CPURule):
    """dlight rule: schedules any PrimFunc whose main block is slimtvm's Winograd product."""

    main_block = GEMM_BLOCK

    def schedule_block(self, sch, block):
        tile = default_winograd_tile(*product_tiles(sch), self.lanes)
        schedule_winograd(sch, tile.px, tile.oc_tile)
        return sch


def winograd_design_spaces(sch: s_tir.Schedule, lanes: int) -> list:
    """MetaSchedule design spaces: one per output-block tile (1, 2 or 4 blocks), each with the
    tile count ``px`` sampled among the divisors of the tiles that fit the registers."""
    tiles, oc_blocks = product_tiles(sch)
    spaces = []
    for oc_tile in (t for t in (1, 2, 4) if oc_blocks % t == 0):
        choices = [d for d in range(2, min(max_accumulators(lanes) // oc_tile, tiles) + 1) if tiles % d == 0] or [1]
        space = sch.copy()
        schedule_winograd(space, categorical(space, choices[-4:]), oc_tile)
        spaces.append(space)
    return spaces
