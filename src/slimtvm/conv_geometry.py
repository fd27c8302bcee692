"""Where a convolution's taps fall: output size, input positions, the padded window.

One helper for every place that needs conv geometry — the BN folding (per-position bias over the
zero padding), the binary lowering and computes (packed, zero-padded input windows, border
classes) and the fp32 computes (output size, padding stage). Imports only numpy, so passes,
lowering and schedules may all use it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def tap_positions(out_size: int, kernel: int, stride: int, dilation: int, pad_before: int) -> np.ndarray:
    """``[out_size, kernel]`` input coordinates along one axis: ``o·stride − pad + k·dilation``
    (negative or ≥ the input size where the tap falls in the zero padding)."""
    return np.arange(out_size)[:, None] * stride - pad_before + np.arange(kernel)[None, :] * dilation


@dataclass(frozen=True)
class ConvGeometry:
    """A 2-D conv's geometry: input ``height × width``, kernel ``kernel_h × kernel_w``, strides,
    dilations and zero padding (top, left, bottom, right). Values are Python ints; the index
    helpers also take TE/TIR expressions."""

    height: int
    width: int
    kernel_h: int
    kernel_w: int
    stride_h: int = 1
    stride_w: int = 1
    dilation_h: int = 1
    dilation_w: int = 1
    top: int = 0
    left: int = 0
    bottom: int = 0
    right: int = 0

    @classmethod
    def of(cls, height, width, kernel_h, kernel_w, strides=(1, 1), padding=(0, 0, 0, 0), dilation=(1, 1)) -> ConvGeometry:
        """From Relax/TOPI-style attributes: ``strides`` and ``dilation`` (h, w), ``padding``
        (top, left, bottom, right) or (h, w) for symmetric padding. Refuses other lengths."""
        padding = [int(v) for v in padding]
        if len(padding) == 2:
            padding = padding * 2
        if len(padding) != 4:
            raise ValueError(f"conv padding must have 2 or 4 values, got {padding}")
        sh, sw = (int(v) for v in strides)
        dh, dw = (int(v) for v in dilation)
        return cls(int(height), int(width), int(kernel_h), int(kernel_w), sh, sw, dh, dw, *padding)

    @property
    def out_h(self) -> int:
        return (self.height + self.top + self.bottom - (self.kernel_h - 1) * self.dilation_h - 1) // self.stride_h + 1

    @property
    def out_w(self) -> int:
        return (self.width + self.left + self.right - (self.kernel_w - 1) * self.dilation_w - 1) // self.stride_w + 1

    @property
    def out_hw(self) -> tuple:
        return self.out_h, self.out_w

    @property
    def padding(self) -> tuple:
        """(top, left, bottom, right)."""
        return self.top, self.left, self.bottom, self.right

    @property
    def has_padding(self) -> bool:
        return any(self.padding)

    @property
    def window(self) -> tuple:
        """(rows, cols) of the zero-padded input that the outputs read: from the first row of
        padding to the last row any tap reaches (a stride may leave padded rows unread)."""
        rows = (self.out_h - 1) * self.stride_h + (self.kernel_h - 1) * self.dilation_h + 1
        cols = (self.out_w - 1) * self.stride_w + (self.kernel_w - 1) * self.dilation_w + 1
        return rows, cols

    def padded_row(self, y, ky):
        """Row of the zero-padded input that output row ``y``'s tap ``ky`` reads."""
        return y * self.stride_h + ky * self.dilation_h

    def padded_col(self, x, kx):
        """Column of the zero-padded input that output column ``x``'s tap ``kx`` reads."""
        return x * self.stride_w + kx * self.dilation_w

    def row_taps(self) -> np.ndarray:
        """``[out_h, kernel_h]`` input rows (see :func:`tap_positions`)."""
        return tap_positions(self.out_h, self.kernel_h, self.stride_h, self.dilation_h, self.top)

    def col_taps(self) -> np.ndarray:
        """``[out_w, kernel_w]`` input columns (see :func:`tap_positions`)."""
        return tap_positions(self.out_w, self.kernel_w, self.stride_w, self.dilation_w, self.left)
