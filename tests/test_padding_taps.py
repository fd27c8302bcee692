"""Conv kernels cut to the taps that read the image (passes/padding_taps.py), against onnxruntime.

DeepLabV3's atrous convs on small feature maps: a 3 × 3 conv of dilation 24 on a 14 × 14 map
reads only zero padding with its off-centre taps, and runs as the 1 × 1 conv of its centre.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from conftest import assert_outputs_match, onnxruntime_outputs
from onnx_builders import GraphBuilder, digits_like_input

import slimtvm
from slimtvm.passes.padding_taps import image_taps, tap_bands


def _touching_taps(length, kernel, stride, dilation, pad_before, pad_after):
    """Brute force: the taps that read an input position inside [0, length) for some output."""
    out_length = (length + pad_before + pad_after - dilation * (kernel - 1) - 1) // stride + 1
    return out_length, [i for i in range(kernel) if any(0 <= y * stride + i * dilation - pad_before < length for y in range(out_length))]


def test_image_taps_are_the_taps_that_read_the_image():
    for length, kernel, stride, dilation, before, after in itertools.product((1, 3, 7), (1, 3, 5), (1, 2, 3), (1, 2, 5), (0, 2, 6), (0, 3, 7)):
        out_length, touching = _touching_taps(length, kernel, stride, dilation, before, after)
        if out_length < 1:
            continue
        expected = (touching[0], touching[-1]) if touching else None
        assert image_taps(length, out_length, kernel, stride, dilation, before) == expected


CASES = [  # (channels in, out, size, kernel, stride, dilation, pads, groups, taps kept, computed in regions)
    (64, 96, 14, 3, 1, 24, (24, 24, 24, 24), 1, 1, False),  # DeepLabV3's rate 24 on 14 × 14: its centre tap alone
    (192, 192, 5, 3, 1, 6, (6, 6, 6, 6), 1, 1, False),
    (64, 96, 14, 3, 1, 12, (12, 12, 12, 12), 1, 9, True),  # rate 12: off-centre taps reach two border rows / columns
    (192, 192, 13, 3, 2, 8, (8, 8, 8, 8), 1, 9, True),  # strided: 3 × 3 regions of 7 × 7 outputs
    (64, 96, 12, 3, 1, (1, 8), (1, 8, 1, 8), 1, 9, False),  # 60% of the products read the image: one conv
    (256, 256, 6, 5, 2, (6, 3), (12, 6, 12, 6), 1, 3, False),  # rows cut to the centre tap, columns keep three (stride 2)
    (256, 256, 8, (3, 1), 1, (16, 1), (16, 0, 16, 0), 1, 1, False),  # a 3 × 1 kernel
    (256, 256, 4, 3, 1, (6, 1), (6, 1, 6, 1), 1, 3, False),  # rows cut to the centre, columns kept whole
    # left as they are: no dilation (a 3 × 3 conv on a 1 × 1 map), too few multiply-adds, depthwise
    (256, 256, 1, 3, 1, 1, (1, 1, 1, 1), 1, 9, False),
    (16, 16, 14, 3, 1, 12, (12, 12, 12, 12), 1, 9, False),
    (256, 256, 14, 3, 1, 12, (12, 12, 12, 12), 256, 9, False),
]


@pytest.mark.parametrize("cin,cout,size,kernel,stride,dilation,pads,groups,kept,regions", CASES)
def test_convs_without_their_padding_taps_match_onnxruntime(tmp_path, cin, cout, size, kernel, stride, dilation, pads, groups, kept, regions):
    g = GraphBuilder(seed=size)
    x = g.input([1, cin, size, size])
    y = g.relu(g.conv(x, cin, cout, kernel=kernel, stride=stride, pads=pads, dilation=dilation, groups=groups))
    model = g.model(g.conv(y, cout, 8, kernel=1))
    inputs = {"x": digits_like_input((1, cin, size, size), seed=size)}
    artifact = slimtvm.compile(model, str(tmp_path / "taps.so"), target="x86-64")
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
    report = next(entry for entry in artifact.manifest["passes"] if entry["name"] == "padding_taps")
    taps = int(np.prod(kernel)) if isinstance(kernel, tuple) else kernel * kernel
    assert report["convs_in_regions"] == int(regions)
    assert report["convs_cropped"] == int(kept < taps and not regions)
    assert report["taps_removed"] == (0 if regions else taps - kept)


def test_tap_bands_cover_the_outputs_with_the_taps_that_read_the_image():
    for length, kernel, stride, dilation, before, after in itertools.product((1, 4, 9), (1, 3, 5), (1, 2), (1, 3, 7), (0, 3, 7), (0, 2, 7)):
        out_length = (length + before + after - dilation * (kernel - 1) - 1) // stride + 1
        if out_length < 1:
            continue
        bands = tap_bands(length, out_length, kernel, stride, dilation, before)
        assert bands[0].start == 0 and bands[-1].stop == out_length
        for band, following in zip(bands, bands[1:]):
            assert band.stop == following.start
        for band in bands:
            for y in range(band.start, band.stop):
                reading = [i for i in range(kernel) if 0 <= y * stride + i * dilation - before < length]
                assert reading == list(range(band.first, band.last + 1))
