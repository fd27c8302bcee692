"""The weight layouts the binary kernels read, packed from ±α weights at compile time.

- :func:`pack_weight_signs`: 32-bit words of sign bits per row (grouped convs, dense layers:
  schedules/binary_grouped_conv_and_dense.py).
- :func:`pack_conv_weight_bytes`: sign bytes ``[KH, KW, CB, O']`` and tap sums (the packed conv:
  schedules/binary_conv_compute.py), :func:`padding_corrections` from the tap sums;
  :func:`split_weight_nibbles` for the AVX2 table popcount.
"""

from __future__ import annotations

import numpy as np

from ..conv_geometry import ConvGeometry
from .binary_conv_compute import border_classes, count_dtype, padded_channel_bytes, padded_out_channels
from .binary_grouped_conv_and_dense import WORD_BITS, words_for


def pack_weight_signs(weight_rows: np.ndarray) -> np.ndarray:
    """Rows of weights [rows, channels] → uint32 words [rows, words]: bit b of word w is
    ``weight[:, 32w + b] > 0``; bits past the last channel are 0."""
    rows, channels = weight_rows.shape
    bits = np.zeros((rows, words_for(channels) * WORD_BITS), dtype=np.uint64)
    bits[:, :channels] = weight_rows > 0
    shifts = np.arange(WORD_BITS, dtype=np.uint64)
    return (bits.reshape(rows, -1, WORD_BITS) << shifts).sum(axis=2).astype(np.uint32)


def pack_conv_weight_bytes(weight: np.ndarray, pad_value: float = 0.0):
    """OIHW ±α weights → (uint8 ``[KH, KW, CB, O']`` sign bytes, ``[KH, KW, O']`` tap
    corrections).

    Bit b of byte k is ``weight[o, 8k + b] > 0``; channel and output-channel padding is 0 bits.
    The kernel packs the padding around the image as 0 bits (−1), so a tap there adds
    ``s = C − 2·(ones among the tap's bits)``; it must add ``−pad_value·s`` (0 for zero padding,
    −s for Larq's one-padding, s for −1), so the correction the kernel subtracts per tap is
    ``(1 + pad_value)·s``. Refuses (ValueError) a pad value other than 0 and ±1.
    """
    if pad_value not in (0.0, 1.0, -1.0):
        raise ValueError(f"pad value {pad_value} is neither 0 nor ±1")
    out_channels, channels, kh, kw = weight.shape
    bits = np.zeros((kh, kw, padded_channel_bytes(channels) * 8, padded_out_channels(out_channels)), dtype=np.uint8)
    bits[:, :, :channels, :out_channels] = np.transpose(weight > 0, (2, 3, 1, 0))
    weight_bytes = np.packbits(bits, axis=2, bitorder="little")
    tap_sums = np.zeros((kh, kw, bits.shape[3]), dtype=np.int32)
    tap_sums[:, :, :out_channels] = (channels - 2 * np.transpose((weight > 0).sum(axis=1), (1, 2, 0))) * int(1 + pad_value)
    return np.ascontiguousarray(weight_bytes), tap_sums.astype(count_dtype(int(1 + pad_value) * kh * kw * channels))


def padding_corrections(tap_sums: np.ndarray, geometry: ConvGeometry) -> np.ndarray:
    """``[row runs, col runs, O']``: for each class of output positions
    (binary_conv_compute.border_classes), the sum of ``tap_sums`` over the taps its window puts
    in the padding (a tap outside along either axis counts once); the dtype of ``tap_sums``,
    which :func:`pack_conv_weight_bytes` sized for all taps together."""
    row_runs, col_runs = border_classes(geometry)
    corrections = np.zeros((len(row_runs), len(col_runs), tap_sums.shape[2]), dtype=np.int64)
    for row_index, (_, _, rows_out) in enumerate(row_runs):
        for col_index, (_, _, cols_out) in enumerate(col_runs):
            outside = np.zeros(tap_sums.shape[:2], dtype=bool)
            outside[list(rows_out), :] = True
            outside[:, list(cols_out)] = True
            corrections[row_index, col_index] = tap_sums[outside].astype(np.int64).sum(axis=0)
    return corrections.astype(tap_sums.dtype)


def split_weight_nibbles(weight_bytes: np.ndarray) -> np.ndarray:
    """uint8 ``[KH, KW, CB, O']`` → ``[KH, KW, CB, 2, O']``: each byte's low nibble, then its
    high nibble, the weights of the AVX2 table popcount (schedules/binary_conv_compute.py)."""
    return np.ascontiguousarray(np.stack([weight_bytes & 15, weight_bytes >> 4], axis=3))
