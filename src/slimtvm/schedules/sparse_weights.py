"""The layout a direct sparse convolution reads: a phase-split zero-padded input and, per
output channel, the nonzero weights with their offsets into it (Park et al., ICLR 2017).

The input is zero-padded and split into ``stride_h × stride_w`` phases (rows ``r ≡ ph`` and
columns ``c ≡ pw`` of the padded input form phase ``(ph, pw)``), each phase a ``[C, rows_q,
cols_q]`` plane (channels ``channel_stride`` floats apart). Output pixel ``(y, x)``'s tap
``(c, ky, kx)`` then lies at

    offset(c, ky, kx) + y·cols_q + x

in the flat buffer, for every stride and dilation: the output pixels are a linear run of the
phase plane, so a kernel vectorizes over ``p = y·cols_q + x`` (computing ``cols_q − out_w`` spare
columns per row, discarded) and broadcasts one nonzero weight per FMA. Only the phases some tap
reads are stored (one for 1×1 and stride-1 convs).

Aligned form (column sums): the kernel is bound by its loads (one vector load per FMA), and a
vector load that straddles two cache lines costs about two (Zen 5: the same nonzeros ran 1.5×
slower at offsets ≡ 3 than ≡ 0 mod 16). With ``cols_q`` and ``channel_stride`` rounded up to
whole vectors, a tap's offset is ``≡ kx' (mod lanes)``, ``kx' = kx·dilation // stride`` (the
column offset, ``0 … column_offsets − 1``). The kernel then reads every tap at its aligned
offset ``offset − kx'`` and adds it into one register block per column offset; block ``kx'``
holds the sums for the pixels ``kx'`` to the right, so the output is ``Σ_kx' sums_kx'[p + kx']``
— shifted once per output row and block, not once per nonzero. One vector more per block with
``kx' > 0``; :meth:`SparseConvLayout.choose` takes the form where the rounding of the rows adds
at most :data:`MAX_ALIGNED_WASTE` pixels and the blocks fit the registers.

Grouped taps (aligned; stride 1, and strided convs with fewer zeros): the taps of one input
channel and row ``(c, ky)`` with different column offsets read the same aligned vectors, so one
entry holds all of them — one offset, the nonzero weights of its tap mask (the blocks they add
into) — and the kernel loads each input vector once for up to ``sums`` FMAs instead of once per
FMA.

Weights become CSR rows of entries per (input-channel chunk, output channel, tap mask), the
chunks keeping a chunk's input window in L1 while all output channels run over it. An entry is
one nonzero (natural: mask 1; aligned: masks ``1 << kx'``) or, grouped, the nonzeros of one
aligned offset (masks 1 … 2^S − 1, S = :attr:`SparseConvLayout.sums`). Row ``r = (chunk·O +
o)·M + m`` (``M`` tap masks, :attr:`SparseConvLayout.tap_masks`): entries ``row_ptr[r]`` to
``row_ptr[r + 1]`` in ``offsets``, their weights from ``value_ptr[r]`` in ``values``, entry by
entry, block by block. No dense copy is kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..conv_geometry import ConvGeometry

BLOCK_VECTORS = range(4, 9)  # register blocks of 4–8 SIMD vectors (with the broadcast, ≤ 9 of AVX2's 16 registers)
MAX_ALIGNED_WASTE = 0.15  # the aligned form computes at most this share more pixels than the natural one
L1_WINDOW_BYTES = 24 * 1024  # a chunk's input window (its channels, one pixel block): fastest at 16–37 KB on Zen 5
# Grouped taps (module doc): ResNet-18's 3×3 stride-1 shapes on Zen 5 ran 1.01–1.31× faster at
# 50–90% zeros; the strided ones 1.0–1.12× at 50%, 0.95–1.06× at 70–90%: strided layers group
# below 60% zeros. A larger window (fewer, longer CSR rows).
MAX_ZEROS_GROUPED_STRIDED = 0.6
L1_WINDOW_BYTES_GROUPED = 36 * 1024
MAX_BLOCKS = 4  # register blocks per output block (column offsets, or accumulator sets): the kernel's buffers
MAX_GROUPED_SUMS = 3  # 2^sums − 1 tap masks, each a loop of its own: seven at most
# Software prefetch (16-lane aligned blocks, one tap per entry): each entry reads its own run of
# input lines, away from the previous entry's, which the hardware prefetchers do not follow.
# Prefetching the first line of the entry this many ahead: ResNet-18's stride-2 convs on Zen 4
# 240 → 228 µs (64 → 128 at 56×56) and 215 → 207 µs (128 → 256 at 28×28); grouped stride-1
# layouts 1.02–1.03× slower with it, 8-lane blocks (256 → 512 at 14×14) 1.05× slower.
PREFETCH_ENTRIES_AHEAD = 6


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _round_up(a: int, b: int) -> int:
    return _ceil_div(a, b) * b


@dataclass(frozen=True)
class SparseConvLayout:
    """The buffers of one sparse conv: ``geometry`` with ``in_channels → out_channels`` (groups
    = 1), output pixels in blocks of ``vector`` floats (the register block), input channels in
    ``chunks`` chunks, and ``align`` > 0: rows and channels padded to ``align`` floats and one
    register block per column offset (module doc), 0: the natural, unaligned form;
    ``accumulator_sets`` (one column sum: the natural form, and 1×1 convs' aligned channel
    planes): register blocks that alternate nonzeros, so that
    consecutive FMAs do not wait on each other; ``grouped`` (aligned form): entries hold all the
    taps of one aligned offset; ``prefetch`` (aligned form) > 0: each entry prefetches the first
    input line of the entry that many further on in its CSR row."""

    geometry: ConvGeometry
    in_channels: int
    out_channels: int
    vector: int
    chunks: int
    align: int = 0
    accumulator_sets: int = 1
    grouped: bool = False
    prefetch: int = 0

    @classmethod
    def choose(
        cls,
        geometry: ConvGeometry,
        in_channels: int,
        out_channels: int,
        lanes: int,
        vector: int | None = None,
        align: int | None = None,
        zeros: float | None = None,
        half_width_blocks: bool = False,
    ) -> SparseConvLayout:
        """The default layout for ``lanes``-wide vectors: aligned (``align`` = ``lanes``) on
        16-lane targets where the rounding wastes at most :data:`MAX_ALIGNED_WASTE` (``align``
        given: that form; 8-lane AVX2 keeps the natural one, as it was measured there), with
        grouped taps for stride 1, and for strided convs with fewer than
        :data:`MAX_ZEROS_GROUPED_STRIDED` of their weights ``zeros`` (when given); the register
        block of :data:`BLOCK_VECTORS` vectors that computes the fewest pixels, each nonzero's own loads (offset, weight broadcast) counted as one more vector
        and, aligned, the extra vector of the shifted sums (so ``computed pixels × (vectors + 1 +
        extra) / vectors``); the input-channel chunks that keep one chunk's window within
        :data:`L1_WINDOW_BYTES`, counted once per row phase of a strided conv; a prefetch
        :data:`PREFETCH_ENTRIES_AHEAD` entries ahead for 16-lane aligned blocks of single taps.
        1×1 convs on 8- and 16-lane targets: channel planes of whole vectors (``align`` =
        ``lanes``, one register block, two accumulator sets), so that every load is aligned —
        576 → 96 channels at 14×14 168 → 66 µs, 960 → 160 at 7×7 89 → 41 µs (Zen 4, 90% zeros).
        ``half_width_blocks`` (targets whose 16-lane instructions run as two 8-lane halves, Zen
        4): where the 16-lane aligned form wastes too much, the aligned form at 8 lanes (rows
        rounded to 8 floats) if that one does not; it costs no more per float there. (From a
        sweep of ResNet-18's 3×3 shapes at 90% zeros on Zen 5: computing a spare partial block
        costs what it computes, blocks larger than 8 vectors gained nothing. Zen 4: 256 → 512
        channels at 14×14, stride 2, 208 µs aligned at 8 lanes, 252 µs natural at 16; a stride-2
        conv's chunks counted over both row phases 1.02–1.3× faster on the AVX-512 and AVX2
        builds.)"""
        registers = 16 if lanes == 8 else 32  # AVX2; AVX-512 and NEON have 32
        if align is None:
            natural = cls(geometry, in_channels, out_channels, lanes, 1).pixels

            def aligned_form(width: int) -> bool:  # its blocks fit the registers and its rounding wastes little
                aligned = cls(geometry, in_channels, out_channels, width, 1, width)
                fits = 1 < aligned.sums <= min(MAX_BLOCKS, width - 1) and aligned.sums * (min(BLOCK_VECTORS) + 1) <= registers
                return fits and aligned.pixels <= (1 + MAX_ALIGNED_WASTE) * natural

            align = lanes if lanes >= 16 and aligned_form(lanes) else 0
            if not align and half_width_blocks and lanes >= 16 and aligned_form(lanes // 2):
                align = lanes // 2
            if not align and lanes >= 8 and geometry.kernel_h == geometry.kernel_w == 1:
                align = lanes  # 1×1: channel planes of whole vectors, so every load is aligned (rows as they are)
        block_lanes = align or lanes  # floats per vector of the register blocks
        strided = geometry.stride_h > 1 or geometry.stride_w > 1
        few_zeros = zeros is not None and zeros < MAX_ZEROS_GROUPED_STRIDED
        sums = cls(geometry, in_channels, out_channels, lanes, 1, align).sums
        grouped = sums > 1 and (not strided or few_zeros) and sums <= MAX_GROUPED_SUMS
        probe = cls(geometry, in_channels, out_channels, lanes, 1, align, grouped=grouped)
        if vector is None:

            def cost(vectors: int) -> tuple:
                # the blocks (one vector more per shifted sum) and the broadcast; grouped, a
                # broadcast per block and the shared input vector
                if probe.sums * vectors + probe.sums + (probe.sums if grouped else 0) > registers:
                    return float("inf"), 0
                extra = (probe.sums - 1) / probe.sums  # the shifted sums' extra vector, per nonzero on average
                return _round_up(probe.pixels, vectors * block_lanes) * (vectors + 1 + extra) / vectors, -vectors

            vector = block_lanes * min(BLOCK_VECTORS, key=cost)
        probe = cls(geometry, in_channels, out_channels, vector, 1, align)
        window = probe.vector + probe.reach + (align if probe.sums > 1 else 0)  # the shifted sums read one vector more
        window_bytes = L1_WINDOW_BYTES_GROUPED if grouped else L1_WINDOW_BYTES
        row_phases = len({ph for ph, _ in probe.phases})  # a chunk's taps read each row phase's planes
        chunks = max(1, min(in_channels, _ceil_div(in_channels * window * row_phases * 4, window_bytes)))
        # two accumulator sets (alternate nonzeros) where the registers hold them: one set of 4–8
        # vectors leaves the FMAs waiting on each other (4 cycles of latency, 2 issued per cycle)
        sets = 2 if sums == 1 and 2 * (vector // lanes) + 2 <= registers else 1
        prefetch = PREFETCH_ENTRIES_AHEAD if align >= 16 and sums > 1 and not grouped else 0
        return cls(geometry, in_channels, out_channels, vector, chunks, align, sets, grouped, prefetch)

    @property
    def phases(self) -> tuple:
        """The (row phase, column phase) pairs some tap reads, in slot order."""
        g = self.geometry
        rows = sorted({(ky * g.dilation_h) % g.stride_h for ky in range(g.kernel_h)})
        cols = sorted({(kx * g.dilation_w) % g.stride_w for kx in range(g.kernel_w)})
        return tuple((ph, pw) for ph in rows for pw in cols)

    @property
    def row_taps(self) -> int:
        """Distinct row offsets ``ky·dilation // stride`` within a phase plane."""
        g = self.geometry
        return (g.kernel_h - 1) * g.dilation_h // g.stride_h + 1

    @property
    def column_offsets(self) -> int:
        """Distinct column offsets ``kx' = kx·dilation // stride`` within a phase plane."""
        g = self.geometry
        return (g.kernel_w - 1) * g.dilation_w // g.stride_w + 1

    @property
    def sums(self) -> int:
        """Register blocks per output block: one per column offset when aligned, else 1."""
        return self.column_offsets if self.align else 1

    @property
    def tap_masks(self) -> tuple:
        """The register blocks an entry adds into, as bit masks, one CSR row each per (chunk,
        output channel): natural (1,); aligned, one block per entry (1, 2, 4, …); grouped,
        every nonempty set of blocks (1 … 2^sums − 1)."""
        if self.grouped:
            return tuple(range(1, 2**self.sums))
        return tuple(1 << block for block in range(self.sums))

    @property
    def rows_q(self) -> int:
        return _ceil_div(self.geometry.window[0], self.geometry.stride_h)

    @property
    def cols_q(self) -> int:
        natural = _ceil_div(self.geometry.window[1], self.geometry.stride_w)
        return _round_up(natural, self.align) if self.align and self.row_taps > 1 else natural

    @property
    def channel_stride(self) -> int:
        area = self.rows_q * self.cols_q
        return _round_up(area, self.align) if self.align else area

    @property
    def plane(self) -> int:
        """Floats per phase: ``in_channels · channel_stride``."""
        return self.in_channels * self.channel_stride

    @property
    def pixels(self) -> int:
        """Virtual output pixels ``out_h · cols_q`` (``cols_q − out_w`` spare ones per row)."""
        return self.geometry.out_h * self.cols_q

    @property
    def blocks(self) -> int:
        return _ceil_div(self.pixels, self.vector)

    @property
    def chunk_channels(self) -> int:
        return _ceil_div(self.in_channels, self.chunks)

    @property
    def reach(self) -> int:
        """How far past its first pixel one channel's taps read (in floats of a phase plane)."""
        return (self.row_taps - 1) * self.cols_q + self.column_offsets

    @property
    def input_size(self) -> int:
        """Floats of the phase-split input buffer: the phases and room for the last block's spare
        reads (one vector more for the shifted sums)."""
        return len(self.phases) * self.plane + _round_up(self.blocks * self.vector + self.reach + self.align, max(1, self.align))

    def phase_rows(self, phase_row: int) -> tuple:
        """[first, end) rows of a phase plane that hold input rows (the rest is padding)."""
        return _interior(self.geometry.top, phase_row, self.geometry.stride_h, self.geometry.height, self.rows_q)

    def phase_cols(self, phase_col: int) -> tuple:
        return _interior(self.geometry.left, phase_col, self.geometry.stride_w, self.geometry.width, self.cols_q)

    def holds_every_column(self, phase_col: int) -> bool:
        """Whether that column phase stores every input column of its phase (none cut by ``cols_q``)."""
        g = self.geometry
        return self.phase_cols(phase_col) == _interior(g.left, phase_col, g.stride_w, g.width, g.width)

    def tap_offsets(self) -> np.ndarray:
        """``[in_channels, kernel_h, kernel_w]`` offsets of each tap for output pixel 0; aligned,
        without the column offset (which selects the register block instead)."""
        g = self.geometry
        slot = {phase: index for index, phase in enumerate(self.phases)}
        ky, kx = np.arange(g.kernel_h) * g.dilation_h, np.arange(g.kernel_w) * g.dilation_w
        slots = np.array([[slot[(a % g.stride_h, b % g.stride_w)] for b in kx] for a in ky])
        column = np.zeros_like(kx) if self.align else kx // g.stride_w
        spatial = slots * self.plane + (ky // g.stride_h)[:, None] * self.cols_q + column[None, :]
        return np.arange(self.in_channels)[:, None, None] * self.channel_stride + spatial[None]

    def tap_sums(self) -> np.ndarray:
        """``[kernel_w]``: the register block each kernel column adds into (its column offset
        when aligned, else 0)."""
        g = self.geometry
        kx = np.arange(g.kernel_w) * g.dilation_w // g.stride_w
        return kx if self.align else np.zeros_like(kx)


def _interior(pad_before: int, phase: int, stride: int, size: int, extent: int) -> tuple:
    """Rows ``i`` of one phase with ``0 ≤ i·stride + phase − pad_before < size``, within extent."""
    first = max(0, _ceil_div(pad_before - phase, stride))
    end = min(extent, (size - 1 + pad_before - phase) // stride + 1)
    return first, max(first, end)


@dataclass(frozen=True)
class SparseConvWeights:
    """CSR of one conv's nonzero weights for :class:`SparseConvLayout` (see the module doc)."""

    values: np.ndarray  # float32 [nnz]
    offsets: np.ndarray  # int32 [entries]: one per nonzero (natural), per tap mask entry (aligned)
    row_ptr: np.ndarray  # int32 [rows + 1], rows = chunks · out_channels · masks: each row's first entry
    value_ptr: np.ndarray  # int32 [rows + 1]: each row's first value

    @property
    def nonzeros(self) -> int:
        return int(self.values.size)


def pack_sparse_conv_weight(weight: np.ndarray, layout: SparseConvLayout) -> SparseConvWeights:
    """CSR rows of ``weight`` (OIHW, float32) per (input-channel chunk, output channel, tap
    mask), with each entry's offset into the phase-split input (module doc). Refuses a weight
    whose shape is not the layout's and offsets beyond int32."""
    out_channels, in_channels, kernel_h, kernel_w = weight.shape
    g = layout.geometry
    if (out_channels, in_channels, kernel_h, kernel_w) != (layout.out_channels, layout.in_channels, g.kernel_h, g.kernel_w):
        raise ValueError(f"weight of shape {weight.shape} does not fit the sparse layout {layout}")
    if layout.input_size >= 2**31:
        raise ValueError(f"sparse conv input of {layout.input_size} floats exceeds int32 offsets")
    nonzero = weight != 0
    offsets = np.broadcast_to(layout.tap_offsets(), weight.shape)[nonzero].astype(np.int64)
    chunk = (np.arange(in_channels) // layout.chunk_channels)[None, :, None, None]
    channel_row = np.broadcast_to(chunk * out_channels + np.arange(out_channels)[:, None, None, None], weight.shape)[nonzero].astype(np.int64)
    block = np.broadcast_to(layout.tap_sums()[None, None, None, :], weight.shape)[nonzero].astype(np.int64)
    values = weight[nonzero]
    # entries: the nonzeros of one (chunk, output channel) at one input offset; the mask of
    # the register blocks they add into selects the CSR row
    keys_per_offset = 1 if layout.grouped else layout.sums  # grouped: one entry per offset, else one per block
    span = (layout.input_size + 1) * keys_per_offset
    entry_key = channel_row * span + offsets * keys_per_offset + (0 if layout.grouped else block)
    entry_keys, entry_of = np.unique(entry_key, return_inverse=True)
    masks = np.zeros(entry_keys.size, np.int64)
    np.bitwise_or.at(masks, entry_of, 1 << block)
    row_of_mask = np.zeros(2**layout.sums, np.int64)
    row_of_mask[list(layout.tap_masks)] = np.arange(len(layout.tap_masks))
    entry_rows = (entry_keys // span) * len(layout.tap_masks) + row_of_mask[masks]
    entry_order = np.argsort(entry_rows, kind="stable")  # by row, then offset
    rank = np.empty_like(entry_order)
    rank[entry_order] = np.arange(entry_order.size)
    value_order = np.lexsort((block, rank[entry_of]))  # by entry, then register block
    rows = layout.chunks * out_channels * len(layout.tap_masks)
    entry_counts = np.bincount(entry_rows, minlength=rows)
    value_counts = np.bincount(entry_rows, weights=_popcount(masks), minlength=rows).astype(np.int64)
    return SparseConvWeights(
        np.ascontiguousarray(values[value_order], dtype=np.float32),
        np.ascontiguousarray(entry_keys[entry_order] % span // keys_per_offset, dtype=np.int32),
        np.concatenate([[0], np.cumsum(entry_counts)]).astype(np.int32),
        np.concatenate([[0], np.cumsum(value_counts)]).astype(np.int32),
    )


def _popcount(masks: np.ndarray) -> np.ndarray:
    """Set bits of each non-negative int64 (numpy ≥ 2's ``bitwise_count``, for numpy 1.26 too)."""
    return np.unpackbits(masks.astype(">u8").view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)
