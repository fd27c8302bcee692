"""Convs without the kernel taps that read only zero padding: the kernel cut, or the output in regions.

A dilated conv on a small feature map can have taps that never land on the image: DeepLabV3's
atrous pyramid runs 3 × 3 convs of dilation 24 and 36 (padding 24 and 36) on 14 × 14 features,
where every off-centre tap reads the zero border for every output pixel, so each is exactly a
1 × 1 conv of its centre tap, with a ninth of the multiply-adds (torchvision's
``deeplabv3_mobilenet_v3_large`` ran 3.8× onnxruntime's time before, most of it in those two
convs and their dilation-12 neighbour).

Along each spatial axis, kernel tap ``i`` (of ``k``, dilation ``d``, stride ``s``, padding
``p_b`` before and ``p_e`` after, input length ``n``, output length ``m``) reads input positions
``y · s + i · d − p_b`` for the outputs ``y = 0 … m − 1``; it reads the image for some output iff
one of them lies in ``[0, n)``. Let ``i0`` and ``i1`` be the first and last taps that do (with a
stride of 2 or more a tap between them can step over a short image; it stays, reading zeros as
before). The conv with the kernel cut to ``i0 … i1``, padding ``p_b − i0 · d`` before and
``p_e − (k − 1 − i1) · d`` after (so that the output length stays ``m``), computes the same sums
without the terms that were products with zeros: exact. A kernel cut to one tap along an axis
takes dilation 1 there.

Where most of a conv's multiply-adds are with padding even after the cut (DeepLabV3's dilation-12
conv on 14 × 14 features: each off-centre tap reads the image for the two outermost rows or
columns only, 18% of its multiply-adds are with the image), the output is split into regions
instead: along each axis, the runs of output positions whose taps on the image are the same
(:func:`tap_bands`: rows 0–1 read the centre and lower taps, rows 2–11 the centre alone, rows
12–13 the upper and centre), and each region of a row run × a column run is the conv of the
image window those taps read, with those taps and no padding, the regions concatenated back
(a region no tap reaches is zeros). The same sums, in the same order of taps: exact. Taken where
the useful share of the multiply-adds of the cut kernel is at most :data:`SPLIT_AT_MOST` and the regions number at
most :data:`MAX_REGIONS` (each is a kernel call).

Rewrites dilated NCHW / OIHW ``relax.nn.conv2d`` calls (dilation 2 or more: atrous convs, where
most taps can miss a small map) of at least :data:`MIN_MACS` multiply-adds with a constant
weight and static shapes where the cut removes at least one tap. Leaves every other conv as it
is: an ordinary conv's border taps are a small share of its work, and a rewritten conv is no
longer one kernel per ONNX node, which per-layer reports count on (a conv in regions shows as
several decisions in ``inspect``'s table).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tvm
from tvm import relax

from .constants import constant_value
from .relax_functions import rewrite_relax_functions
from .static_shapes import static_shape

SPLIT_AT_MOST = 0.5  # split where at most this share of the multiply-adds reads the image
MAX_REGIONS = 16
MIN_MACS = 8_000_000  # smaller convs keep their form: microseconds at most to gain


@dataclass(frozen=True)
class Band:
    """Output positions ``start … stop − 1`` along one axis, whose taps on the image are
    ``first … last`` (none when ``first > last``)."""

    start: int
    stop: int
    first: int
    last: int

    @property
    def taps(self) -> int:
        return max(0, self.last - self.first + 1)


def tap_bands(length: int, out_length: int, kernel: int, stride: int, dilation: int, pad_before: int) -> list[Band]:
    """The runs of output positions along one axis with the same taps on the image: for output
    ``y``, the taps ``i`` with ``0 ≤ y · stride + i · dilation − pad_before < length``."""
    bands: list[Band] = []
    for y in range(out_length):
        offset = y * stride - pad_before
        first = max(0, -(offset // dilation))  # ceil(−offset / dilation)
        last = min(kernel - 1, (length - 1 - offset) // dilation)
        if bands and (bands[-1].first, bands[-1].last) == (first, last):
            bands[-1] = Band(bands[-1].start, y + 1, first, last)
        else:
            bands.append(Band(y, y + 1, first, last))
    return bands


def image_taps(length: int, out_length: int, kernel: int, stride: int, dilation: int, pad_before: int) -> tuple[int, int] | None:
    """``(i0, i1)``: the first and last kernel tap along one axis that reads the image for some
    output position (module docstring); None when none does (then every output is the bias
    alone, which this pass leaves to the conv)."""
    reaching = [band for band in tap_bands(length, out_length, kernel, stride, dilation, pad_before) if band.taps]
    return (min(band.first for band in reaching), max(band.last for band in reaching)) if reaching else None


def _image_share(bands: list[Band]) -> float:
    """The share of one axis' tap products that read the image, with the kernel cut to the taps
    that reach it (what cutting alone leaves)."""
    reaching = [band for band in bands if band.taps]
    if not reaching:
        return 1.0
    cut = max(band.last for band in reaching) - min(band.first for band in reaching) + 1
    return sum((band.stop - band.start) * band.taps for band in bands) / (bands[-1].stop * cut)


@relax.expr_functor.mutator
class _Rewriter(relax.PyExprMutator):
    def __init__(self, mod):
        super().__init__(mod)
        self.cropped = 0
        self.split = 0
        self.taps_removed = 0

    def visit_call_(self, call):
        call = super().visit_call_(call)
        if not isinstance(call.op, tvm.ir.Op) or call.op.name != "relax.nn.conv2d":
            return call
        attrs = call.attrs
        if (str(attrs.data_layout), str(attrs.kernel_layout)) != ("NCHW", "OIHW") or str(attrs.out_layout) not in ("NCHW", ""):
            return call
        weight = constant_value(call.args[1])
        data_shape, out_shape = static_shape(call.args[0]), static_shape(call)
        if weight is None or data_shape is None or out_shape is None or weight.ndim != 4:
            return call
        dilation = [int(v) for v in attrs.dilation]
        if max(dilation) < 2 or int(np.prod(out_shape)) * int(np.prod(weight.shape[1:])) < MIN_MACS:
            return call
        conv = _Conv(weight, [int(v) for v in attrs.strides], dilation, [int(v) for v in attrs.padding], int(attrs.groups), str(attrs.out_dtype))
        bands = [tap_bands(data_shape[2 + a], out_shape[2 + a], weight.shape[2 + a], conv.strides[a], conv.dilation[a], conv.padding[a]) for a in (0, 1)]
        share = _image_share(bands[0]) * _image_share(bands[1])
        if share <= SPLIT_AT_MOST and len(bands[0]) * len(bands[1]) <= MAX_REGIONS:
            self.split += 1
            return conv.in_regions(call.args[0], bands, out_shape)
        rows = image_taps(data_shape[2], out_shape[2], weight.shape[2], conv.strides[0], conv.dilation[0], conv.padding[0])
        cols = image_taps(data_shape[3], out_shape[3], weight.shape[3], conv.strides[1], conv.dilation[1], conv.padding[1])
        if rows is None or cols is None or (rows, cols) == ((0, weight.shape[2] - 1), (0, weight.shape[3] - 1)):
            return call
        cropped = conv.cropped(call.args[0], rows, cols)
        if cropped is None:
            return call
        self.cropped += 1
        self.taps_removed += weight.shape[2] * weight.shape[3] - (rows[1] - rows[0] + 1) * (cols[1] - cols[0] + 1)
        return cropped


@dataclass(frozen=True)
class _Conv:
    """A conv's constant OIHW weight and attributes (padding: top, left, bottom, right)."""

    weight: np.ndarray
    strides: list
    dilation: list
    padding: list
    groups: int
    out_dtype: str

    def call(self, data, rows: tuple, cols: tuple, padding: list):
        """The conv of ``data`` with the kernel's taps ``rows[0] … rows[1]`` × ``cols[0] … cols[1]``."""
        (r0, r1), (c0, c1) = rows, cols
        return relax.op.nn.conv2d(
            data,
            relax.const(np.ascontiguousarray(self.weight[:, :, r0 : r1 + 1, c0 : c1 + 1])),
            strides=self.strides,
            padding=padding,
            dilation=[self.dilation[0] if r1 > r0 else 1, self.dilation[1] if c1 > c0 else 1],
            groups=self.groups,
            data_layout="NCHW",
            kernel_layout="OIHW",
            out_layout="NCHW",
            out_dtype=None if self.out_dtype in ("", "void", "None") else self.out_dtype,
        )

    def cropped(self, data, rows: tuple, cols: tuple):
        """The conv with its kernel cut to ``rows`` × ``cols`` (module docstring), or None where
        the padding that keeps the output's size would be negative."""
        (r0, r1), (c0, c1) = rows, cols
        kh, kw = self.weight.shape[2:]
        top, left, bottom, right = self.padding
        padding = [
            top - r0 * self.dilation[0],
            left - c0 * self.dilation[1],
            bottom - (kh - 1 - r1) * self.dilation[0],
            right - (kw - 1 - c1) * self.dilation[1],
        ]
        return None if min(padding) < 0 else self.call(data, rows, cols, padding)

    def in_regions(self, data, bands: list, out_shape: list):
        """The output as row bands × column bands (module docstring), concatenated."""
        dtype = self.out_dtype if self.out_dtype not in ("", "void", "None") else str(data.ty.dtype)
        row_parts = []
        for row in bands[0]:
            parts = []
            for col in bands[1]:
                if row.taps == 0 or col.taps == 0:
                    parts.append(relax.op.zeros(relax.ShapeExpr([out_shape[0], out_shape[1], row.stop - row.start, col.stop - col.start]), dtype))
                    continue
                begin = [band.start * self.strides[a] + band.first * self.dilation[a] - self.padding[a] for a, band in enumerate((row, col))]
                end = [(band.stop - 1) * self.strides[a] + band.last * self.dilation[a] - self.padding[a] + 1 for a, band in enumerate((row, col))]
                window = relax.op.strided_slice(data, axes=[2, 3], begin=begin, end=end)
                parts.append(self.call(window, (row.first, row.last), (col.first, col.last), [0, 0, 0, 0]))
            row_parts.append(parts[0] if len(parts) == 1 else relax.op.concat(parts, axis=3))
        return row_parts[0] if len(row_parts) == 1 else relax.op.concat(row_parts, axis=2)


@tvm.transform.module_pass(opt_level=0, name="slimtvm.PaddingTaps")
class PaddingTaps:
    """Relax module pass (module docstring): ``cropped`` counts the convs whose kernel was cut
    (``taps_removed`` the taps they lost), ``split`` those computed in regions."""

    def __init__(self):
        self.cropped = 0
        self.split = 0
        self.taps_removed = 0

    def transform_module(self, mod, _ctx):
        rewriter = _Rewriter(mod)
        mod = rewrite_relax_functions(mod, rewriter)
        self.cropped, self.split, self.taps_removed = rewriter.cropped, rewriter.split, rewriter.taps_removed
        return mod
