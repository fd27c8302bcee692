"""HardSwish, HardSigmoid and Clip (MobileNetV3's activations, imported with Relax's ``clip``)
run as ``maximum`` / ``minimum`` ops (passes/scalar_min_max.py): they follow the blocked layout
and join the convs' epilogues, with no relayouts between the convs; outputs as onnxruntime's."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from conftest import assert_outputs_match, onnxruntime_outputs, x86_kernel_presets
from onnx_builders import GraphBuilder, digits_like_input

import slimtvm

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _mobilenet_v3_block(channels: int = 32, expanded: int = 96, size: int = 14):
    """A stem conv, then MobileNetV3's inverted residual with hard-swish (1×1 expand, 3×3
    depthwise), a hard-sigmoid squeeze-excite gate and a 1×1 projection; a Clip with fractional
    bounds on the residual sum."""
    g = GraphBuilder(seed=41)
    x = g.input([1, 16, size, size])
    stem = g.node("HardSwish", [g.batchnorm(g.conv(x, 16, channels, kernel=3, pads=(1, 1, 1, 1), bias=False), channels)])
    y = g.node("HardSwish", [g.batchnorm(g.conv(stem, channels, expanded, kernel=1, bias=False), expanded)])
    y = g.node("HardSwish", [g.batchnorm(g.conv(y, expanded, expanded, kernel=3, pads=(1, 1, 1, 1), groups=expanded, bias=False), expanded)])
    s = g.relu(g.conv(g.node("GlobalAveragePool", [y]), expanded, 24, kernel=1))
    s = g.node("HardSigmoid", [g.conv(s, 24, expanded, kernel=1)], alpha=1.0 / 6, beta=0.5)
    y = g.batchnorm(g.conv(g.node("Mul", [y, s]), expanded, channels, kernel=1, bias=False), channels)
    clipped = g.node("Clip", [g.node("Add", [stem, y]), g.const(np.float32(-1.5), "lo"), g.const(np.float32(2.5), "hi")])
    return g.model(g.conv(clipped, channels, 16, kernel=1)), [1, 16, size, size]


@pytest.mark.parametrize("preset", x86_kernel_presets())
def test_mobilenet_v3_activations_keep_the_blocked_layout(tmp_path, preset):
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from parallel_chunks import parallel_extents

    model, shape = _mobilenet_v3_block()
    inputs = {"x": digits_like_input(shape, seed=6) * 3}
    artifact = slimtvm.compile(model, str(tmp_path / "v3.so"), target=preset)
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
    kernels = parallel_extents(model, "x86-64-avx512" if preset == "host" else preset)
    relayouts = sorted(name for name in kernels if "channel_relayout" in name)
    assert len(relayouts) <= 2, relayouts  # the model's input and output (before: around every clip)
    assert not [name for name in kernels if "clip" in name]
    assert sum("conv2d" in name and "maximum" in name and "minimum" in name for name in kernels) >= 2, sorted(kernels)
