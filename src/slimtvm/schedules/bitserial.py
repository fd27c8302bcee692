"""Binary (1-bit × 1-bit) conv2d and dense computes: XNOR + popcount on bit-packed channels.

Two conv computes. :func:`binary_conv2d_packed` is the fast one (groups = 1; its schedule is in
schedules/bitserial_conv.py): activations are packed 8 channels to a byte,
``[N, H, W, C/8]`` and weights to bytes ``[KH, KW, C/8, O]``, so that one activation byte is
broadcast against a vector of 32 output channels and popcounts run on byte lanes (AVX2 ``vpshufb``,
NEON ``cnt``). :func:`binary_conv2d_nchw` (32-bit words, any groups) is the general fallback.

Convention (bipolar): a bit is 1 for +1 and 0 for −1. Activations are binarized here by
``x ≥ 0 → +1`` — ONNX's Sign gives 0 for an exact 0, the one difference slimtvm documents.
Channels are packed 32 to a ``uint32`` word; the bits past the last channel are 0 in both the
activations and the weights, so they never count as a disagreement.

For one tap the dot product of ``C`` signs is ``C − 2·popcount(a XOR w)``. A zero-padded tap
contributes 0, exactly as ONNX pads Sign's output with zeros, so the sum runs over in-bounds taps
only. The integer result is multiplied once by the per-output-channel scale ``α``.
"""

from __future__ import annotations

from tvm import te, tirx

from .stages import conv_output_hw

WORD_BITS = 32
CHANNEL_LANES = 32  # output channels per vector of byte popcounts (one AVX2 register)
MAX_CHUNK_BYTES = 16  # bytes summed in 8-bit lanes before widening: 16 · 8 = 128 < 256


def chunk_bytes(channel_bytes: int) -> int:
    """Bytes per 8-bit partial sum: all of them up to 16, else 16 (the channel bytes are then
    padded to a multiple of 16 with zero bytes, which never disagree)."""
    return min(channel_bytes, MAX_CHUNK_BYTES)


def padded_channel_bytes(channels: int) -> int:
    channel_bytes = (channels + 7) // 8
    chunk = chunk_bytes(channel_bytes)
    return (channel_bytes + chunk - 1) // chunk * chunk


def count_dtype(total_bits: int) -> str:
    """The integer type of a conv's popcount sums and dot products: int16 when they fit."""
    return "int16" if total_bits < 2**15 else "int32"


def padded_out_channels(out_channels: int) -> int:
    return (out_channels + CHANNEL_LANES - 1) // CHANNEL_LANES * CHANNEL_LANES


PACKED_CONV_BLOCK = "binary_conv2d_counts"
PACKED_ROWS_BLOCK = "packed_rows"
PACKED_DOT_BLOCK = "binary_conv2d_dot"
PACKED_PARTIAL_BLOCK = "binary_conv2d_partial"


def words_for(channels: int) -> int:
    return (channels + WORD_BITS - 1) // WORD_BITS


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


def pack_signs(data, channel_axis: int, name: str):
    """Pack ``data``'s channel axis into uint32 words of sign bits (bit b = channel 32w + b ≥ 0)."""
    shape = list(data.shape)
    channels = int(shape[channel_axis])
    words = words_for(channels)
    bit = te.reduce_axis((0, WORD_BITS), name=f"{name}_bit")
    out_shape = shape[:channel_axis] + [words] + shape[channel_axis + 1 :]

    def packed(*index):
        word = index[channel_axis]
        channel = word * WORD_BITS + bit.var
        source = list(index)
        source[channel_axis] = channel
        in_range = channel < channels
        value = data(*[tirx.if_then_else(in_range, i, 0) if a == channel_axis else i for a, i in enumerate(source)])
        one = tirx.const(1, "uint32")
        return te.sum(tirx.if_then_else(tirx.all(in_range, value >= 0), one << bit.var.astype("uint32"), tirx.const(0, "uint32")), axis=bit)

    return te.compute(out_shape, packed, name=name)


def binary_conv2d_nchw(data, weight_bits, alpha, in_channels_per_group, strides, padding, dilation, groups, in_block=0, out_block=0):
    """α_o · Σ sign(data) ⋆ sign(weight), any groups: ``data`` float NCHW or NCHW[in_block]c;
    ``weight_bits`` uint32 [O, words per group, KH, KW]; ``alpha`` float [O]; ``padding`` (top,
    left, bottom, right); the result in NCHW or NCHW[out_block]c."""
    n, channels, height, width = nchw_dims(data, in_block)
    read = nchw_reader(data, in_block)
    out_channels, words, kh, kw = (int(d) for d in weight_bits.shape)
    per_group = int(in_channels_per_group)
    sh, sw = (int(v) for v in strides)
    dh, dw = (int(v) for v in dilation)
    top, left, _, _ = (int(v) for v in padding)
    out_h, out_w = conv_output_hw(height, width, kh, kw, strides, padding, dilation)
    grouped = te.compute((n, groups, per_group, height, width), lambda b, g, c, y, x: read(b, g * per_group + c, y, x), name="group_view")
    packed = pack_signs(grouped, 2, "packed_data")
    out_per_group = out_channels // groups
    word = te.reduce_axis((0, words), name="word")
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")

    def dot(b, o, y, x):
        iy = y * sh + ry * dh - top
        ix = x * sw + rx * dw - left
        inside = tirx.all(iy >= 0, iy < height, ix >= 0, ix < width)
        g = o // out_per_group
        bits = tirx.min(per_group - word * WORD_BITS, WORD_BITS)
        disagree = tirx.popcount(packed[b, g, word, tirx.if_then_else(inside, iy, 0), tirx.if_then_else(inside, ix, 0)] ^ weight_bits[o, word, ry, rx])
        return te.sum(tirx.if_then_else(inside, bits - 2 * disagree.astype("int32"), 0), axis=[word, ry, rx])

    counts = te.compute((n, out_channels, out_h, out_w), dot, name="binary_conv2d")
    return in_layout((n, out_channels, out_h, out_w), out_block, lambda b, o, y, x: counts[b, o, y, x].astype("float32") * alpha[o], "binary_conv2d_scaled")


def binary_dense(data, weight_bits, alpha, in_features):
    """α_n · Σ_k sign(data[m, k]) · sign(w[k, n]): ``weight_bits`` uint32 [N, words]."""
    rows = int(data.shape[0])
    out_features, words = (int(d) for d in weight_bits.shape)
    features = int(in_features)
    packed = pack_signs(data, 1, "packed_data")
    word = te.reduce_axis((0, words), name="word")

    def dot(m, j):
        bits = tirx.min(features - word * WORD_BITS, WORD_BITS)
        return te.sum(bits - 2 * tirx.popcount(packed[m, word] ^ weight_bits[j, word]).astype("int32"), axis=word)

    counts = te.compute((rows, out_features), dot, name="binary_dense")
    return te.compute((rows, out_features), lambda m, j: counts[m, j].astype("float32") * alpha[j], name="binary_dense_scaled")


def pack_sign_rows(data, channel_bytes: int, rows: int, cols: int, top: int, left: int, block: int = 0, name=PACKED_ROWS_BLOCK):
    """float NCHW (or NCHW[block]c) ``data`` → uint8 ``[N, rows, cols, channel_bytes]``: bit b of byte k at
    (row, col) is 1 when channel 8k + b at pixel (row − top, col − left) is ≥ 0. Positions outside
    the image (the conv's zero padding) and channels past the last one are 0 bits."""
    n, channels, height, width = nchw_dims(data, block)
    read = nchw_reader(data, block)

    def packed(b, row, col, byte):
        iy, ix = row - top, col - left
        inside = tirx.all(iy >= 0, iy < height, ix >= 0, ix < width)
        cy = tirx.max(tirx.min(iy, height - 1), 0)
        cx = tirx.max(tirx.min(ix, width - 1), 0)
        value = tirx.const(0, "uint8")
        for bit in range(8):
            channel = byte * 8 + bit
            safe_channel = tirx.min(channel, channels - 1)
            positive = tirx.all(inside, channel < channels, read(b, safe_channel, cy, cx) >= 0)
            value = value | tirx.if_then_else(positive, tirx.const(1 << bit, "uint8"), tirx.const(0, "uint8"))
        return value

    return te.compute((n, rows, cols, channel_bytes), packed, name=name)


def binary_conv2d_packed(data, weight_bytes, alpha, tap_sums, channels, strides, padding, dilation, in_block=0, out_block=0):
    """α_o · Σ_in-bounds taps sign(data) ⋆ sign(weight), groups = 1; float NCHW or NCHW[b]c in
    (``in_block``) and out (``out_block``).

    ``weight_bytes`` uint8 ``[KH, KW, CB, O']`` (CB = :func:`padded_channel_bytes`, O' =
    :func:`padded_out_channels`, zero bits in the padding); ``alpha`` float ``[O]``;
    ``tap_sums`` ``[KH, KW, O']`` (int16 when KH·KW·C < 2¹⁵, else int32) = C − 2·(ones among the tap's weight bits), the value a
    tap over zero padding adds when its activation bits are all 0. The popcount sum runs over
    every tap and subtracts ``tap_sums`` of the out-of-image taps, so padded taps contribute 0.
    """
    n, _, height, width = nchw_dims(data, in_block)
    kh, kw, channel_bytes, padded_out = (int(d) for d in weight_bytes.shape)
    out_channels = int(alpha.shape[0])
    sh, sw = (int(v) for v in strides)
    dh, dw = (int(v) for v in dilation)
    top, left, _, _ = (int(v) for v in padding)
    out_h, out_w = conv_output_hw(height, width, kh, kw, strides, padding, dilation)
    rows, cols = (out_h - 1) * sh + (kh - 1) * dh + 1, (out_w - 1) * sw + (kw - 1) * dw + 1
    packed = pack_sign_rows(data, channel_bytes, rows, cols, top, left, in_block)
    chunk = chunk_bytes(channel_bytes)
    byte = te.reduce_axis((0, chunk), name="byte")
    partial = te.compute(
        (n, out_h, out_w, kh, kw, channel_bytes // chunk, padded_out),
        lambda b, y, x, ry, rx, c, o: te.sum(
            tirx.popcount(packed[b, y * sh + ry * dh, x * sw + rx * dw, c * chunk + byte] ^ weight_bytes[ry, rx, c * chunk + byte, o]), axis=byte
        ),
        name=PACKED_PARTIAL_BLOCK,
    )
    total_bits = kh * kw * int(channels)
    counts_type = count_dtype(total_bits)
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    rc = te.reduce_axis((0, channel_bytes // chunk), name="rc")
    counts = te.compute(
        (n, out_h, out_w, padded_out),
        lambda b, y, x, o: te.sum(partial[b, y, x, ry, rx, rc, o].astype(counts_type), axis=[ry, rx, rc]),
        name=PACKED_CONV_BLOCK,
    )

    def corrected(b, y, x, o):
        dot = tirx.const(total_bits, counts_type) - counts[b, y, x, o] * tirx.const(2, counts_type)
        for ty in range(kh):
            for tx in range(kw):
                iy, ix = y * sh + ty * dh - top, x * sw + tx * dw - left
                outside = tirx.any(iy < 0, iy >= height, ix < 0, ix >= width)
                dot = dot - tirx.if_then_else(outside, tap_sums[ty, tx, o], tirx.const(0, counts_type))
        return dot

    dots = te.compute((n, out_h, out_w, padded_out), corrected, name=PACKED_DOT_BLOCK)
    return in_layout((n, out_channels, out_h, out_w), out_block, lambda b, o, y, x: dots[b, y, x, o].astype("float32") * alpha[o], "binary_conv2d_scaled")
