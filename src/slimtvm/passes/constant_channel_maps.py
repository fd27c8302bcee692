"""The value of a channel that does not depend on the input, through convs, pools and element-wise ops.

A channel is *constant* when its value is the same for every input: a filter whose weights are all
zero outputs 0; its bias, a ReLU or a BN shift keep it constant. Zero padding makes such a channel a
per-position map rather than one number (a zero-padded conv or pool sees the padding at the
border), so a constant channel is kept as a float64 map of the tensor's spatial shape (``[H, W]``
for NCHW tensors, ``[]`` for ``[N, C]`` ones) and every op is evaluated on maps exactly as the op
would compute it, padding included.

numpy only; used by :mod:`slimtvm.passes.remove_dead_channels`.
"""

from __future__ import annotations

import numpy as np

from ..conv_geometry import tap_positions

UNARY = {
    "relax.nn.relu": lambda x, _c: np.maximum(x, 0.0),
    "relax.sigmoid": lambda x, _c: 1.0 / (1.0 + np.exp(-x)),
    "relax.nn.silu": lambda x, _c: x / (1.0 + np.exp(-x)),
    "relax.tanh": lambda x, _c: np.tanh(x),
    "relax.negative": lambda x, _c: -x,
    "relax.exp": lambda x, _c: np.exp(x),
    "relax.nn.leakyrelu": lambda x, c: np.where(x >= 0, x, x * float(c.attrs.alpha)),
    "relax.clip": lambda x, c: np.clip(x, float(c.args[1].value), float(c.args[2].value)),
}

BINARY = {
    "relax.add": np.add,
    "relax.subtract": np.subtract,
    "relax.multiply": np.multiply,
    "relax.divide": np.divide,
    "relax.maximum": np.maximum,
    "relax.minimum": np.minimum,
}


def _windows(maps: np.ndarray, out_size: tuple, kernel: tuple, strides, dilation, pad_before):
    """For ``maps[c, H, W]``: a generator of ``(ky, kx, window[c, OH, OW], valid[OH, OW])`` per
    kernel tap, where ``window`` reads the map at that tap of every output position (0 where the
    tap falls outside the map) and ``valid`` says where it falls inside."""
    height, width = maps.shape[1:]
    rows = tap_positions(out_size[0], kernel[0], strides[0], dilation[0], pad_before[0])
    cols = tap_positions(out_size[1], kernel[1], strides[1], dilation[1], pad_before[1])
    for ky in range(kernel[0]):
        row_ok = (rows[:, ky] >= 0) & (rows[:, ky] < height)
        r = np.clip(rows[:, ky], 0, height - 1)
        for kx in range(kernel[1]):
            col_ok = (cols[:, kx] >= 0) & (cols[:, kx] < width)
            c = np.clip(cols[:, kx], 0, width - 1)
            valid = row_ok[:, None] & col_ok[None, :]
            yield ky, kx, maps[:, r][:, :, c] * valid, valid


def _geometry(attrs) -> tuple:
    """(strides, dilation, padding before) of Relax conv2d attributes, as ints."""
    return [int(v) for v in attrs.strides], [int(v) for v in attrs.dilation], [int(v) for v in attrs.padding][:2]


def conv_of_maps(weight: np.ndarray, maps: np.ndarray, out_size: tuple, attrs) -> np.ndarray:
    """``Σ_i conv(maps[i], weight[:, i])`` for an OIHW ``weight[O, I, kh, kw]`` and constant input
    maps ``[I, H, W]``, zero padded as the conv (Relax conv2d ``attrs``) pads: ``[O, OH, OW]`` in
    float64."""
    out = np.zeros((weight.shape[0],) + tuple(out_size))
    if maps.shape[0] == 0:
        return out
    weight = weight.astype(np.float64)
    for ky, kx, window, _ in _windows(maps, out_size, weight.shape[2:], *_geometry(attrs)):
        out += np.einsum("oi,iyx->oyx", weight[:, :, ky, kx], window)
    return out


def depthwise_of_maps(weight: np.ndarray, maps: np.ndarray, out_size: tuple, attrs) -> np.ndarray:
    """A depthwise conv (``weight[C, 1, kh, kw]``, Relax conv2d ``attrs``) of maps ``[C, H, W]``:
    ``[C, OH, OW]``."""
    out = np.zeros((weight.shape[0],) + tuple(out_size))
    weight = weight.astype(np.float64)
    for ky, kx, window, _ in _windows(maps, out_size, weight.shape[2:], *_geometry(attrs)):
        out += weight[:, 0, ky, kx][:, None, None] * window
    return out


def pool_of_maps(kind: str, maps: np.ndarray, out_size: tuple, attrs) -> np.ndarray:
    """``max`` or ``avg`` pooling of maps ``[C, H, W]`` with Relax pool2d ``attrs`` (NCHW):
    padding is ignored by max; avg divides by the taps inside the padded extent when
    ``count_include_pad``, else by the taps inside the map."""
    kernel = [int(v) for v in attrs.pool_size]
    strides = [int(v) for v in attrs.strides]
    dilation = [int(v) for v in attrs.dilation]
    padding = [int(v) for v in attrs.padding]
    height, width = maps.shape[1:]
    if kind == "max":
        out = np.full((maps.shape[0],) + tuple(out_size), -np.inf)
        for _, _, window, valid in _windows(maps, out_size, kernel, strides, dilation, padding[:2]):
            out = np.where(valid, np.maximum(out, window), out)
        return out
    total = np.zeros((maps.shape[0],) + tuple(out_size))
    count = np.zeros(tuple(out_size))
    rows = tap_positions(out_size[0], kernel[0], strides[0], dilation[0], padding[0])
    cols = tap_positions(out_size[1], kernel[1], strides[1], dilation[1], padding[1])
    for ky, kx, window, valid in _windows(maps, out_size, kernel, strides, dilation, padding[:2]):
        total += window
        if bool(attrs.count_include_pad):
            in_rows = (rows[:, ky] >= -padding[0]) & (rows[:, ky] < height + padding[2])
            in_cols = (cols[:, kx] >= -padding[1]) & (cols[:, kx] < width + padding[3])
            count += in_rows[:, None] & in_cols[None, :]
        else:
            count += valid
    return total / np.maximum(count, 1)
