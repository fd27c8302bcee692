"""Binary (1-bit × 1-bit) conv2d and dense computes: XNOR + popcount on bit-packed channels.

The general computes: grouped convs and dense layers, channels packed into 32-bit words. Convs
with groups = 1 use the fast byte-packed kernel of schedules/binary_conv_compute.py instead.

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

from ..conv_geometry import ConvGeometry
from .binary_conv_compute import in_layout, nchw_dims, nchw_reader

WORD_BITS = 32


def words_for(channels: int) -> int:
    return (channels + WORD_BITS - 1) // WORD_BITS


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
    geometry = ConvGeometry.of(height, width, kh, kw, strides, padding, dilation)
    out_h, out_w = geometry.out_hw
    grouped = te.compute((n, groups, per_group, height, width), lambda b, g, c, y, x: read(b, g * per_group + c, y, x), name="group_view")
    packed = pack_signs(grouped, 2, "packed_data")
    out_per_group = out_channels // groups
    word = te.reduce_axis((0, words), name="word")
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")

    def dot(b, o, y, x):
        iy = geometry.padded_row(y, ry) - geometry.top
        ix = geometry.padded_col(x, rx) - geometry.left
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
