"""What a layer reads on calibration data, as the rows of its matrix form.

onnxruntime runs the model on each calibration input with every layer's input tensor as an extra
output; each tensor becomes rows of the layer's matrix product (slimtvm.compress.matrix_layers): a
conv's zero-padded patches (I·kh·kw values per output pixel, the layer's strides and dilations), a
Gemm's or MatMul's input rows. Memory stays bounded: per layer at most ``max_rows`` rows are kept
in all, an equal share per calibration input drawn uniformly without replacement (seeded) from its
output positions, so a 56×56 layer of a ResNet keeps about a thousand of its pixels.
"""

from __future__ import annotations

import math

import numpy as np

from .lossy_error import onnxruntime_runs
from .matrix_layers import MatrixLayer
from .weight_layers import attribute

MAX_ROWS = 2048


def conv_padding(node, height: int, width: int, kernel: tuple) -> tuple:
    """(top, left, bottom, right) zero padding of an ONNX Conv with a ``kernel`` (kh, kw) on a
    height × width input, ``auto_pad`` included."""
    strides = attribute(node, "strides", [1, 1])
    dilations = attribute(node, "dilations", [1, 1])
    auto_pad = attribute(node, "auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = []
        for size, k, s, d in zip((height, width), kernel, strides, dilations):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            small, large = total // 2, total - total // 2
            pads.append((small, large) if auto_pad == "SAME_UPPER" else (large, small))
        return pads[0][0], pads[1][0], pads[0][1], pads[1][1]
    if auto_pad == "VALID":
        return 0, 0, 0, 0
    pads = attribute(node, "pads", [0, 0, 0, 0])
    return pads[0], pads[1], pads[2], pads[3]


def conv_patches(node, x: np.ndarray, batch: np.ndarray, oy: np.ndarray, ox: np.ndarray, kernel: tuple) -> np.ndarray:
    """The zero-padded patches (rows of C·kh·kw) the ONNX Conv ``node`` reads from ``x`` (N, C, H, W)
    for the outputs at (``batch``, ``oy``, ``ox``)."""
    strides, dilations = attribute(node, "strides", [1, 1]), attribute(node, "dilations", [1, 1])
    top, left, bottom, right = conv_padding(node, x.shape[2], x.shape[3], kernel)
    padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    rows = oy[:, None] * strides[0] + np.arange(kernel[0])[None, :] * dilations[0]  # padded coordinates
    cols = ox[:, None] * strides[1] + np.arange(kernel[1])[None, :] * dilations[1]
    channels = np.arange(x.shape[1])
    return padded[batch[:, None, None, None], channels[None, :, None, None], rows[:, None, :, None], cols[:, None, None, :]].reshape(len(batch), -1)


def conv_rows(layer: MatrixLayer, x: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` (or all, if fewer) patches of the conv ``layer`` on input ``x`` (N, I, H, W), at
    output positions drawn uniformly without replacement."""
    node = layer.node
    kh, kw = layer.kernel
    strides, dilations = attribute(node, "strides", [1, 1]), attribute(node, "dilations", [1, 1])
    top, left, bottom, right = conv_padding(node, x.shape[2], x.shape[3], layer.kernel)
    out_h = (x.shape[2] + top + bottom - (kh - 1) * dilations[0] - 1) // strides[0] + 1
    out_w = (x.shape[3] + left + right - (kw - 1) * dilations[1] - 1) // strides[1] + 1
    total = x.shape[0] * out_h * out_w
    chosen = rng.choice(total, size=min(count, total), replace=False)
    batch, rest = np.divmod(chosen, out_h * out_w)
    oy, ox = np.divmod(rest, out_w)
    return conv_patches(node, x, batch, oy, ox, layer.kernel)


def matrix_rows(layer: MatrixLayer, x: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` (or all) input rows of a Gemm (its ``transA`` applied) or MatMul ``layer``."""
    if layer.op == "Gemm" and attribute(layer.node, "transA", 0):
        x = x.T
    x = x.reshape(-1, x.shape[-1])
    return x[rng.choice(x.shape[0], size=min(count, x.shape[0]), replace=False)]


def layer_input_rows(model, layers: list, calibration: list, max_rows: int = MAX_ROWS, seed: int = 0) -> dict:
    """{layer name: float32 rows (n, reduction)} for ``layers`` (MatrixLayer) of ``model`` on the
    ``calibration`` feeds (see module doc)."""
    rng = np.random.default_rng(seed)
    share = max(1, max_rows // max(1, len(calibration)))
    collected = {layer.name: [] for layer in layers}
    tensors = sorted({layer.node.input[0] for layer in layers})
    for values in onnxruntime_runs(model, calibration, tensors, "--low-rank"):
        for layer in layers:
            x = np.asarray(values[layer.node.input[0]], np.float32)
            pick = conv_rows if layer.kernel else matrix_rows
            collected[layer.name].append(pick(layer, x, share, rng))
    return {name: np.concatenate(parts).astype(np.float32) for name, parts in collected.items()}
