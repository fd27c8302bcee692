"""The fast binary conv2d (groups = 1): byte-packed activations, byte-lane popcounts, and its two
epilogues — float output, or sign bits for the next binary conv (integer thresholds).

Activations are packed 8 channels to a byte, ``[N, rows, cols, CB]`` (channel bytes innermost,
zero-padded rows and columns around the image, CB = :func:`padded_channel_bytes`); weights are
bytes ``[KH, KW, CB, O']`` with O' = :func:`padded_out_channels`. One activation byte is broadcast
against a vector of 32 output channels' weight bytes, so popcounts run on byte lanes (AVX2
``vpshufb``, AVX-512 BITALG ``vpopcntb``, NEON ``cnt``); the schedule is in
schedules/binary_conv_schedule.py. k-bit unipolar activations (``levels`` = 2^k − 1) are packed as k bit
planes and use the AND form (:func:`unipolar_dots`).

Convention (bipolar): bit 1 is +1, bit 0 is −1; ``x ≥ 0 → +1`` (ONNX's Sign(0) is 0: the one
documented difference). For one tap, the dot product of C signs is ``C − 2·popcount(a XOR w)``.
Zero padding is a third value that contributes 0: the popcount sum runs over every tap (padding
bytes are 0 bits) and subtracts, for the taps outside the image, what such a tap added
(``C − 2·ones(w)``, its ``tap_sums``). Padding with ±1 (Larq's one-padding) only changes that
correction: schedules/binary_weights.py scales it by 1 + value, and sums it at compile time for
each class of output positions whose window leaves the image the same way
(``padding_corrections``): a kernel input, read once per output, not a stage each call.

Bit output: BN and any per-channel scale/shift before a Sign make ``a_c·dot + b_c ≥ 0`` per
channel, i.e. ``flip_c·dot ≥ threshold_c`` with ``flip_c`` ∈ {1, −1, 0} (the pass computes the
integers). A max-pool between them becomes a bitwise OR of the bits (Sign is monotone; the pool's
−∞ padding is a 0 bit). The bits are written in the next conv's packed, zero-padded layout; with whole bytes of channels
the bytes are a stage of their own (``sign_bytes``), which the x86 schedule computes with a
vector compare per byte (sign_pack_intrin.py).
"""

from __future__ import annotations

from tvm import te, tirx

from ..conv_geometry import ConvGeometry
from .sign_pack_intrin import packed_byte, sign_byte

CHANNEL_LANES = 32  # output channels per vector of byte popcounts (one AVX2 register)
MAX_CHUNK_BYTES = 16  # channel bytes per 8-bit partial sum (16 · 8 = 128 < 256); whole kernel rows when ≤ 31 bytes

PACKED_ROWS_BLOCK = "packed_rows"
PACKED_IMAGE_BLOCK = "packed_image"
PACKED_PLANES_BLOCK = "packed_planes"
PACKED_PARTIAL_BLOCK = "binary_conv2d_partial"
PACKED_CONV_BLOCK = "binary_conv2d_counts"
PACKED_DOT_BLOCK = "binary_conv2d_dot"
DOTS_BY_CHANNEL_BLOCK = "binary_conv2d_dot_by_channel"
SIGN_BITS_BLOCK = "sign_bits"
SIGN_BYTES_BLOCK = "sign_bytes"  # the sign bits of whole bytes of channels (sign_pack_intrin.py)
SIGN_PRODUCTS_BLOCK = "sign_products"  # flip · dot, read by the sign bytes
# A row per activation byte a: popcount(combine(a's low nibble, j mod 16)) for 32 lanes j, then
# the same for a's high nibble (vpshufb looks up 16 entries within each 128-bit half, so each
# half holds them); 256 × 64 bytes, so the row address is the byte itself times 64
POPCOUNT_TABLE_BLOCK = "popcount_table"


def chunk_bytes(channel_bytes: int) -> int:
    """Bytes per 8-bit partial sum: all of them up to 16, else 16 (the channel bytes are then
    padded to a multiple of 16 with zero bytes, which never disagree)."""
    return min(channel_bytes, MAX_CHUNK_BYTES)


def padded_channel_bytes(channels: int) -> int:
    channel_bytes = (channels + 7) // 8
    chunk = chunk_bytes(channel_bytes)
    return (channel_bytes + chunk - 1) // chunk * chunk


def weight_dims(weights) -> tuple:
    """(KH, KW, CB, O') of weight bytes ``[KH, KW, CB, O']`` or nibbles ``[KH, KW, CB, 2, O']``."""
    shape = [int(d) for d in weights.shape]
    return shape[0], shape[1], shape[2], shape[-1]


def byte_popcounts(weights, combine):
    """``count(a, ry, rx, k, o)``: popcount(combine(activation byte ``a``, weight byte k of tap
    (ry, rx), output channel o)), a uint8 expression.

    Weight bytes ``[KH, KW, CB, O']``: LLVM's popcount (``cnt`` on NEON, ``vpopcntb`` with
    AVX-512 BITALG, a six-instruction ``vpshufb`` sequence on AVX2). Weight nibbles
    ``[KH, KW, CB, 2, O']`` (low nibble, high nibble; see passes/detect_binary.py): the AVX2 table form,
    two ``vpshufb`` and two adds per 32 channels. The activation byte selects two 32-byte rows of
    :data:`POPCOUNT_TABLE_BLOCK` (loads at ``table + 64·a``: no nibble arithmetic on the scalar
    side), which the 32 channels' weight nibbles index. Measured on ResNet-18's 56×56×64 binary
    conv core: 0.285 ms with rows per nibble (16 × 32 table), 0.24 ms with rows per byte, against
    0.33 ms for LLVM's popcount (its best tile). The expression is valid only vectorized over
    exactly 32 channels (``CHANNEL_LANES``, as schedules/binary_conv_schedule.py does); scalar code
    would not compile."""
    if len(weights.shape) == 4:
        return lambda a, ry, rx, k, o: tirx.popcount(combine(a, weights[ry, rx, k, o]))
    table = te.compute(
        (256, 2 * CHANNEL_LANES),
        lambda byte, lane: tirx.popcount(combine(tirx.if_then_else(lane < CHANNEL_LANES, byte & 15, byte >> 4).astype("uint8"), (lane % 16).astype("uint8"))),
        name=POPCOUNT_TABLE_BLOCK,
    )

    def shuffle(row, index):
        return tirx.call_llvm_pure_intrin("uint8", "llvm.x86.avx2.pshuf.b", row, index)

    def count(a, ry, rx, k, o):
        byte = a.astype("int32")
        lane = o % CHANNEL_LANES
        return shuffle(table[byte, lane], weights[ry, rx, k, 0, o]) + shuffle(table[byte, CHANNEL_LANES + lane], weights[ry, rx, k, 1, o])

    return count


def padded_out_channels(out_channels: int) -> int:
    return (out_channels + CHANNEL_LANES - 1) // CHANNEL_LANES * CHANNEL_LANES


def count_dtype(total_bits: int) -> str:
    """The integer type of a conv's popcount sums and dot products: int16 when they fit."""
    return "int16" if total_bits < 2**15 else "int32"


def nchw_reader(data, block: int):
    """``read(n, c, y, x)`` for ``data`` in NCHW (``block`` 0) or NCHW[block]c."""
    if block:
        return lambda n, c, y, x: data[n, c // block, y, x, c % block]
    return lambda n, c, y, x: data[n, c, y, x]


def nchw_dims(data, block: int) -> tuple:
    """(N, C, H, W) of ``data`` in NCHW or NCHW[block]c."""
    shape = [int(d) for d in data.shape]
    return (shape[0], shape[1] * block, shape[2], shape[3]) if block else tuple(shape)


def in_layout(shape_nchw: tuple, block: int, value, name: str):
    """A compute of NCHW ``shape_nchw`` laid out as NCHW (block 0) or NCHW[block]c; ``value(n, c, y, x)``."""
    n, c, h, w = shape_nchw
    if block:
        return te.compute((n, c // block, h, w, block), lambda b, chunk, y, x, lane: value(b, chunk * block + lane, y, x), name=name)
    return te.compute((n, c, h, w), value, name=name)


def _byte_of_bits(bit_of, byte, channels: int):
    """Σ_b bit_of(8·byte + b) << b over the channels that exist (a uint8 expression)."""
    value = tirx.const(0, "uint8")
    for bit in range(8):
        channel = byte * 8 + bit
        on = tirx.all(channel < channels, bit_of(tirx.min(channel, channels - 1)))
        value = value | tirx.if_then_else(on, tirx.const(1 << bit, "uint8"), tirx.const(0, "uint8"))
    return value


def _padded_rows(image, rows: int, cols: int, top: int, left: int, name: str, depth: int | None = None):
    """``image`` uint8 [N, H, W, B] placed at (top, left) in zeros of [N, rows, cols, B]; or
    ``image`` [N, H, W, blocks, per block] (one pixel's bytes by channel block) read as its
    ``blocks · per block`` bytes, zeros from there up to ``depth``."""
    n, height, width = (int(d) for d in image.shape[:3])
    per_block = int(image.shape[4]) if len(image.shape) == 5 else 0
    filled = int(image.shape[3]) * (per_block or 1)
    depth = filled if depth is None else depth

    def padded(b, row, col, index):
        iy, ix = row - top, col - left
        inside = tirx.all(iy >= 0, iy < height, ix >= 0, ix < width, *([index < filled] if depth > filled else []))
        where = (b, tirx.max(tirx.min(iy, height - 1), 0), tirx.max(tirx.min(ix, width - 1), 0))
        byte = tirx.min(index, filled - 1) if depth > filled else index
        value = image[(*where, byte // per_block, byte % per_block)] if per_block else image[(*where, byte)]
        return tirx.if_then_else(inside, value, tirx.const(0, "uint8"))

    return te.compute((n, rows, cols, depth), padded, name=name)


def pack_sign_rows(data, channel_bytes: int, rows: int, cols: int, top: int, left: int, block: int = 0, name=PACKED_ROWS_BLOCK):
    """float NCHW (or NCHW[block]c) ``data`` → uint8 ``[N, rows, cols, channel_bytes]``: bit b of
    byte k at (row, col) is 1 when channel 8k + b at pixel (row − top, col − left) is ≥ 0.
    Positions outside the image (the conv's zero padding) and channels past the last are 0 bits.
    The image is packed first (contiguous reads), then placed in its zero border. From NCHW[b]c
    with b a multiple of 8 the image is ``[N, H, W, C/b, b/8]``, one channel block's bytes
    innermost: the x86 schedule packs each block with a vector compare (sign_pack_intrin.py)."""
    n, channels, height, width = nchw_dims(data, block)
    read = nchw_reader(data, block)
    if block:  # a byte's 8 channels are contiguous floats of one block (8 or 16 channels): packed a block at a time
        if block % 8:
            raise ValueError(f"blocks of {block} channels do not hold whole bytes of signs")
        image = te.compute(
            (n, height, width, channels // block, block // 8),
            lambda b, y, x, chunk, k: sign_byte(lambda bit: data[b, chunk, y, x, k * 8 + bit]),
            name=PACKED_IMAGE_BLOCK,
        )
        return _padded_rows(image, rows, cols, top, left, name, channel_bytes)
    # NCHW: bytes along each row first (contiguous reads and writes), then pixel-major (a transpose)
    planes = te.compute(
        (n, height, channel_bytes, width), lambda b, y, byte, x: _byte_of_bits(lambda c: read(b, c, y, x) >= 0, byte, channels), name=PACKED_PLANES_BLOCK
    )
    image = te.compute((n, height, width, channel_bytes), lambda b, y, x, byte: planes[b, y, byte, x], name=PACKED_IMAGE_BLOCK)
    return _padded_rows(image, rows, cols, top, left, name)


def pack_level_rows(data, channel_bytes: int, rows: int, cols: int, top: int, left: int, block: int, levels: int, step: float = 0.0, name=PACKED_ROWS_BLOCK):
    """Unipolar k-bit activations: ``q = nearbyint(clip(x, 0, 1)·levels)`` (``levels`` = 2^k − 1,
    ONNX's Clip → Mul → Round, round half to even), or with a ``step`` > 0
    ``q = nearbyint(clip(x / step, 0, levels))`` (QONNX's unsigned Quant: Div → Clip → Round), as bit planes, uint8
    ``[N, rows, cols, k·channel_bytes]`` (plane-major: byte p·CB + k holds bit p of channels
    8k..8k+7). Outside the image, and past the last channel, q = 0."""
    n, channels, height, width = nchw_dims(data, block)
    read = nchw_reader(data, block)
    planes = int(levels).bit_length()

    def level(b, c, y, x):
        if step:
            scaled = read(b, c, y, x) / tirx.const(float(step), "float32")
            value = tirx.min(tirx.max(scaled, tirx.const(0.0, "float32")), tirx.const(float(levels), "float32"))
        else:
            value = tirx.min(tirx.max(read(b, c, y, x), tirx.const(0.0, "float32")), tirx.const(1.0, "float32")) * tirx.const(float(levels), "float32")
        return tirx.nearbyint(value).astype("int32")

    def packed(b, y, x, index):
        plane, byte = index // channel_bytes, index % channel_bytes
        return _byte_of_bits(lambda c: ((level(b, c, y, x) >> plane) & 1) == 1, byte, channels)

    image = te.compute((n, height, width, planes * channel_bytes), packed, name=PACKED_IMAGE_BLOCK)
    return _padded_rows(image, rows, cols, top, left, name)


def _popcount_counts(packed, weight_bytes, geometry: ConvGeometry, combine, planes: int, counts_type: str):
    """``Σ_taps,bytes popcount(combine(activation byte, weight byte)) · 2^plane`` per output
    ``[N, OH, OW, O']``, summed in 8-bit lanes before widening.

    A partial sum covers one tap's chunk of channel bytes, or — when a whole kernel row's bytes fit
    (KW · CB ≤ 31, e.g. 3 × 8 bytes for 64 channels) — the whole row, which widens 3× less often.
    With bit planes (unipolar input, plane-major bytes) each plane has its own partial sums."""
    n = int(packed.shape[0])
    kh, kw, channel_bytes, padded_out = weight_dims(weight_bytes)
    out_h, out_w = geometry.out_hw
    chunk = chunk_bytes(channel_bytes)
    chunks = channel_bytes // chunk
    count = byte_popcounts(weight_bytes, combine)
    whole_rows = chunks == 1 and kw * chunk * 8 <= 255
    byte = te.reduce_axis((0, chunk), name="byte")

    def act(b, y, x, ry, rx, plane, index):
        return packed[b, geometry.padded_row(y, ry), geometry.padded_col(x, rx), plane * channel_bytes + index]

    if whole_rows:
        rx_in = te.reduce_axis((0, kw), name="rx_in")
        groups = planes
        partial = te.compute(
            (n, out_h, out_w, kh, groups, padded_out),
            lambda b, y, x, ry, g, o: te.sum(count(act(b, y, x, ry, rx_in, g, byte), ry, rx_in, byte, o), axis=[rx_in, byte]),
            name=PACKED_PARTIAL_BLOCK,
        )
    else:
        groups = kw * chunks * planes  # g = (rx · chunks + c) · planes + plane

        def one_chunk(b, y, x, ry, g, o):
            plane, rest = g % planes, g // planes
            rx, c = rest // chunks, rest % chunks
            return te.sum(count(act(b, y, x, ry, rx, plane, c * chunk + byte), ry, rx, c * chunk + byte, o), axis=byte)

        partial = te.compute((n, out_h, out_w, kh, groups, padded_out), one_chunk, name=PACKED_PARTIAL_BLOCK)
    ry = te.reduce_axis((0, kh), name="ry")
    rg = te.reduce_axis((0, groups), name="rg")

    def widened(b, y, x, o):
        value = partial[b, y, x, ry, rg, o].astype(counts_type)
        return te.sum(value << (rg % planes).astype(counts_type) if planes > 1 else value, axis=[ry, rg])

    return te.compute((n, out_h, out_w, padded_out), widened, name=PACKED_CONV_BLOCK)


def binary_conv_dots(packed, weight_bytes, corrections, channels: int, geometry: ConvGeometry, levels: int = 1):
    """Integer dot products ``[N, OH, OW, O']`` of the packed input (rows and columns from
    (−top, −left), zero outside the geometry's image) with the weights, padded taps
    contributing 0. ``levels`` = 1: bipolar sign bits (XNOR form), less ``corrections``
    ``[row runs, col runs, O']`` (schedules/binary_weights.py, ``padding_corrections``: what the
    taps in the padding added, per :func:`border_classes` run). ``levels`` = 2^k − 1: k unipolar
    bit planes (AND form, :func:`unipolar_dots`; no correction)."""
    if levels > 1:
        return unipolar_dots(packed, weight_bytes, channels, geometry, levels)
    n = int(packed.shape[0])
    kh, kw, _, padded_out = weight_dims(weight_bytes)
    out_h, out_w = geometry.out_hw
    total_bits = kh * kw * int(channels)
    counts_type = "int32" if "int32" in (count_dtype(total_bits), str(corrections.dtype)) else "int16"  # one-padding doubles the corrections
    counts = _popcount_counts(packed, weight_bytes, geometry, lambda a, w: a ^ w, 1, counts_type)
    row_runs, col_runs = border_classes(geometry)
    row_class, col_class = _class_of(row_runs), _class_of(col_runs)

    def corrected(b, y, x, o):
        dot = tirx.const(total_bits, counts_type) - counts[b, y, x, o] * tirx.const(2, counts_type)
        return dot - corrections[row_class(y), col_class(x), o].astype(counts_type)

    return te.compute((n, out_h, out_w, padded_out), corrected, name=PACKED_DOT_BLOCK)


def border_classes(geometry: ConvGeometry) -> tuple:
    """(row runs, column runs) of :func:`_border_runs` for the geometry's output rows and columns."""
    return _border_runs(geometry.row_taps(), geometry.height), _border_runs(geometry.col_taps(), geometry.width)


def _border_runs(taps, size: int) -> list:
    """Output positions along one axis (``taps``: ``[out, kernel]`` input coordinates) grouped by
    which kernel taps fall in the zero padding: ``[(first, last, outside taps)]`` runs in order
    (typically: first rows, interior, last rows)."""
    runs = []
    for position, coordinates in enumerate(taps):
        outside = tuple(int(t) for t in (~((coordinates >= 0) & (coordinates < size))).nonzero()[0])
        if runs and runs[-1][2] == outside:
            runs[-1][1] = position
        else:
            runs.append([position, position, outside])
    return runs


def _class_of(runs: list):
    """``index(position)``: the run a position falls in, as a chain of comparisons."""

    def index(position):
        value = tirx.const(len(runs) - 1, "int32")
        for run_index in range(len(runs) - 2, -1, -1):
            value = tirx.if_then_else(position <= runs[run_index][1], tirx.const(run_index, "int32"), value)
        return value

    return index


def unipolar_dots(packed, weight_bytes, channels: int, geometry: ConvGeometry, levels: int):
    """Σ q·s over the window, q ∈ {0..levels} in bit planes b_p, s = ±1 weight signs:
    ``Σ_p 2^p·(2·popcount(b_p AND w) − popcount(b_p))``. Zero padding is q = 0 and adds nothing."""
    n = int(packed.shape[0])
    kh, kw, channel_bytes, padded_out = weight_dims(weight_bytes)
    out_h, out_w = geometry.out_hw
    planes = int(levels).bit_length()
    counts_type = count_dtype(2 * int(levels) * kh * kw * int(channels))
    counts = _popcount_counts(packed, weight_bytes, geometry, lambda a, w: a & w, planes, counts_type)
    oy = te.reduce_axis((0, kh), name="oy")
    ox = te.reduce_axis((0, kw), name="ox")
    ok = te.reduce_axis((0, planes * channel_bytes), name="ok")
    ones = te.compute(
        (n, out_h, out_w),
        lambda b, y, x: te.sum(
            tirx.popcount(packed[b, geometry.padded_row(y, oy), geometry.padded_col(x, ox), ok]).astype(counts_type)
            << (ok // channel_bytes).astype(counts_type),
            axis=[oy, ox, ok],
        ),
        name="unipolar_ones",
    )
    return te.compute((n, out_h, out_w, padded_out), lambda b, y, x, o: counts[b, y, x, o] * tirx.const(2, counts_type) - ones[b, y, x], name=PACKED_DOT_BLOCK)


def _input(source, weight_bytes, channels, image_hw, strides, padding, dilation, in_block, levels=1, step=0.0):
    """(packed bytes, :class:`ConvGeometry`): ``source`` is float (packed here: sign bits, or
    ``levels`` unipolar bit planes) or already-packed uint8 (``image_hw`` gives the image size)."""
    kh, kw, channel_bytes, _ = weight_dims(weight_bytes)
    if str(source.dtype) == "uint8":
        height, width = (int(v) for v in image_hw)
    else:
        _, _, height, width = nchw_dims(source, in_block)
    geometry = ConvGeometry.of(height, width, kh, kw, strides, padding, dilation)
    if str(source.dtype) == "uint8":
        return source, geometry
    rows, cols = geometry.window
    pack = pack_level_rows if levels > 1 else pack_sign_rows
    extra = (levels, step) if levels > 1 else ()
    return pack(source, channel_bytes, rows, cols, geometry.top, geometry.left, in_block, *extra), geometry


def binary_conv2d_packed(source, weight_bytes, alpha, corrections, channels, image_hw, strides, padding, dilation, in_block=0, out_block=0, levels=1, step=0.0):
    """α_o · Σ_in-bounds taps sign(x) ⋆ sign(w), float NCHW or NCHW[out_block]c out.

    ``source``: float NCHW / NCHW[in_block]c (packed here), or uint8 bits already packed by a
    producing binary conv (``image_hw`` is then the image size; ignored otherwise).
    ``alpha`` float ``[O]``; ``corrections`` ``[row runs, col runs, O']`` (:func:`count_dtype`,
    :func:`binary_conv_dots`). ``levels`` > 1:
    unipolar activations ``q/levels`` (k-bit, AND form; ``alpha`` then already holds α/levels), or
    ``q·step`` with a ``step`` (``alpha`` holds α·step; :func:`pack_level_rows`)."""
    packed, geometry = _input(source, weight_bytes, channels, image_hw, strides, padding, dilation, in_block, levels, step)
    dots = binary_conv_dots(packed, weight_bytes, corrections, channels, geometry, levels)
    n, out_h, out_w, _ = (int(d) for d in dots.shape)
    out_channels = int(alpha.shape[0])
    if out_block:
        return in_layout((n, out_channels, out_h, out_w), out_block, lambda b, o, y, x: dots[b, y, x, o].astype("float32") * alpha[o], "binary_conv2d_scaled")
    # NCHW: the dots' rows of pixels per channel first (a transpose in registers, see the schedule)
    by_channel = te.compute((n, out_h, out_channels, out_w), lambda b, y, o, x: dots[b, y, x, o], name=DOTS_BY_CHANNEL_BLOCK)
    return in_layout((n, out_channels, out_h, out_w), 0, lambda b, o, y, x: by_channel[b, y, o, x].astype("float32") * alpha[o], "binary_conv2d_scaled")


def binary_conv2d_to_bits(
    source,
    weight_bytes,
    corrections,
    flip,
    threshold,
    channels,
    out_channels,
    image_hw,
    strides,
    padding,
    dilation,
    in_block,
    pool,
    next_conv,
    levels=1,
    step=0.0,
):
    """Sign bits of ``a_c·dot + b_c`` (as ``flip_c·dot ≥ threshold_c``), optionally max-pooled
    (OR), written packed for the next binary conv.

    ``pool``: () or (kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, out_h, out_w) of
    a max-pool between the BN and the Sign. ``next_conv``: (channel_bytes, rows, cols, top, left) of the
    consumer's packed input (its :attr:`ConvGeometry.window`). ``levels``: the producer's own
    input, as in :func:`binary_conv2d_packed`, and its ``step``."""
    packed, geometry = _input(source, weight_bytes, channels, image_hw, strides, padding, dilation, in_block, levels, step)
    dots = binary_conv_dots(packed, weight_bytes, corrections, channels, geometry, levels)
    n, out_h, out_w, _ = (int(d) for d in dots.shape)
    next_bytes, rows, cols, top, left = (int(v) for v in next_conv)
    if out_channels % 8 == 0:  # whole bytes of channels: a vector compare each on x86 (sign_pack_intrin.py)
        filled = out_channels // 8
        # the products are a stage of their own (inlined by the schedule): written inside the
        # comparison, relax's call_te widened their int32 cast to int64 (its index dtype rewrite
        # also rewrites casts in conditions), and the compare no longer matched the intrinsic
        products = te.compute((n, out_h, out_w, out_channels), lambda b, y, x, c: dots[b, y, x, c].astype("int32") * flip[c], name=SIGN_PRODUCTS_BLOCK)
        sign_bytes = te.compute(
            (n, out_h, out_w, filled),
            lambda b, y, x, k: packed_byte(lambda bit: products[b, y, x, k * 8 + bit] >= threshold[k * 8 + bit]),
            name=SIGN_BYTES_BLOCK,
        )

        def bits_at(b, y, x, k):  # bytes past the channels (the consumer's padding) are 0
            if next_bytes <= filled:
                return sign_bytes[b, y, x, k]
            return tirx.if_then_else(k < filled, sign_bytes[b, y, x, tirx.min(k, filled - 1)], tirx.const(0, "uint8"))

    else:
        bits = te.compute(
            (n, out_h, out_w, next_bytes),
            lambda b, y, x, k: _byte_of_bits(lambda c: dots[b, y, x, c].astype("int32") * flip[c].astype("int32") >= threshold[c], k, out_channels),
            name=SIGN_BITS_BLOCK,
        )

        def bits_at(b, y, x, k):
            return bits[b, y, x, k]

    bits_h, bits_w = out_h, out_w
    if pool:
        pkh, pkw, psh, psw, ptop, pleft, bits_h, bits_w = (int(v) for v in pool)

        def pooled(b, py, px, k):
            value = tirx.const(0, "uint8")
            for wy in range(pkh):
                for wx in range(pkw):
                    iy, ix = py * psh + wy - ptop, px * psw + wx - pleft
                    inside = tirx.all(iy >= 0, iy < out_h, ix >= 0, ix < out_w)
                    read = bits_at(b, tirx.max(tirx.min(iy, out_h - 1), 0), tirx.max(tirx.min(ix, out_w - 1), 0), k)
                    value = value | tirx.if_then_else(inside, read, tirx.const(0, "uint8"))
            return value

        pooled_bits = te.compute((n, bits_h, bits_w, next_bytes), pooled, name="sign_bits_pooled")

        def final_bits(b, y, x, k):
            return pooled_bits[b, y, x, k]

    else:
        final_bits = bits_at
    return te.compute(
        (n, rows, cols, next_bytes),
        lambda b, r, c, k: tirx.if_then_else(
            tirx.all(r >= top, r < top + bits_h, c >= left, c < left + bits_w),
            final_bits(b, tirx.max(tirx.min(r - top, bits_h - 1), 0), tirx.max(tirx.min(c - left, bits_w - 1), 0), k),
            tirx.const(0, "uint8"),
        ),
        name="packed_next",
    )
