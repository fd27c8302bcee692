"""LRN's sum over neighbouring channels runs as a banded 1×1 conv in the blocked layout
(lowering/channel_windows.py): no 5-D pool, no relayouts around it, the scale, shift, power and
divide in the conv's epilogue; outputs as onnxruntime's LRN, for window sizes of 3 and 5 and
channel counts of whole 16- and 8-channel blocks. (TVM 0.27's ONNX frontend cannot import an
LRN of even size: it pads the window by ⌊(size − 1)/2⌋ on both sides, one channel short.)"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from conftest import assert_outputs_match, onnxruntime_outputs, x86_kernel_presets
from onnx_builders import GraphBuilder

import slimtvm
from slimtvm.lowering.channel_windows import window_weight

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _lrn_model(channels: int, size: int, image: int = 15):
    g = GraphBuilder(seed=channels + size)
    x = g.input([1, 8, image, image])
    y = g.relu(g.conv(x, 8, channels, kernel=3, pads=(1, 1, 1, 1)))
    y = g.node("LRN", [y], size=size, alpha=2e-4, beta=0.75, bias=2.0)
    return g.model(g.conv(y, channels, 16, kernel=1))


@pytest.mark.parametrize("preset", x86_kernel_presets())
@pytest.mark.parametrize("channels,size", [(64, 5), (96, 3), (48, 5)])
def test_lrn_is_a_banded_conv_in_the_blocked_layout(tmp_path, preset, channels, size):
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from parallel_chunks import parallel_extents

    model = _lrn_model(channels, size)
    inputs = {"x": np.random.default_rng(size).standard_normal((1, 8, 15, 15)).astype(np.float32) * 20}
    artifact = slimtvm.compile(model, str(tmp_path / "lrn.so"), target=preset)
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
    assert [layer["kernel"] for layer in artifact.manifest["layers"] if layer["op"] == "conv2d"].count("banded_conv2d") == 1
    kernels = parallel_extents(model, "x86-64-avx512" if preset == "host" else preset)
    assert not [name for name in kernels if "pool" in name], sorted(kernels)
    assert len([name for name in kernels if "channel_relayout" in name]) <= 2, sorted(kernels)  # the model's input and output
    assert [name for name in kernels if "banded" in name and "power" in name and "divide" in name], sorted(kernels)


def test_the_window_weight_sums_the_channels_onnx_names():
    """ONNX LRN: channel c sums channels max(0, c − ⌊(size − 1)/2⌋) to min(C − 1, c + ⌈(size − 1)/2⌉)."""
    for channels, size in ((7, 5), (7, 4), (3, 5), (6, 1)):
        before = (size - 1) // 2
        weight = window_weight(channels, size, before)[:, :, 0, 0]
        for c in range(channels):
            expected = np.zeros(channels, np.float32)
            expected[max(0, c - (size - 1) // 2) : min(channels - 1, c + -(-(size - 1) // 2)) + 1] = 1.0 / size
            np.testing.assert_array_equal(weight[c], expected)


def test_only_targets_the_banded_kernel_serves_get_the_conv():
    """On NEON's 4 lanes the window sum would be a dense C × C conv: the pool stays."""
    from slimtvm.frontend.onnx_import import import_onnx
    from slimtvm.lowering.channel_windows import ChannelWindowSums

    for lanes, rewritten in ((4, 0), (8, 1), (16, 1)):
        windows = ChannelWindowSums(lanes)
        text = windows(import_onnx(_lrn_model(64, 5), None).mod).script()
        assert len(windows.weights) == rewritten
        assert ("avg_pool3d" in text) == (not rewritten)
