"""Squeeze-excite blocks (EfficientNet's sigmoid gate, MobileNetV3's hard sigmoid): the gate's
1×1 conv runs on a 1×1 image and its epilogue broadcasts the result over the whole feature map
(``x · sigmoid(conv(pool(x)))`` fused into one kernel); compiled on both x86 builds and matched
against onnxruntime. EfficientNet-B0's shapes failed to compile before the conv schedules ran
such a broadcast tail as a loop nest of its own (schedules/stages.py, ``split_stages``)."""

from __future__ import annotations

import pytest
from conftest import assert_outputs_match, onnxruntime_outputs, x86_kernel_presets
from onnx_builders import GraphBuilder, digits_like_input

import slimtvm


def _mbconv_model(gate: str, channels: int = 24, expanded: int = 144, squeezed: int = 6, size: int = 14):
    """An inverted residual block with a squeeze-excite gate: 1×1 expand (SiLU) → 5×5 depthwise
    (SiLU) → pool → 1×1 → SiLU → 1×1 → gate → scale → 1×1 project, plus the residual."""
    g = GraphBuilder(seed=31)
    x = g.input([1, channels, size, size])

    def silu(y):
        return g.node("Mul", [y, g.node("Sigmoid", [y])])

    y = silu(g.batchnorm(g.conv(x, channels, expanded, kernel=1, bias=False), expanded))
    y = silu(g.batchnorm(g.conv(y, expanded, expanded, kernel=5, pads=(2, 2, 2, 2), groups=expanded, bias=False), expanded))
    s = silu(g.conv(g.node("GlobalAveragePool", [y]), expanded, squeezed, kernel=1))
    s = g.conv(s, squeezed, expanded, kernel=1)
    s = g.node("Sigmoid", [s]) if gate == "sigmoid" else g.node("HardSigmoid", [s], alpha=1.0 / 6, beta=0.5)
    y = g.node("Mul", [y, s])
    y = g.batchnorm(g.conv(y, expanded, channels, kernel=1, bias=False), channels)
    return g.model(g.node("Add", [x, y])), [1, channels, size, size]


@pytest.mark.parametrize("preset", x86_kernel_presets())
@pytest.mark.parametrize("gate", ["sigmoid", "hardsigmoid"])
def test_squeeze_excite_blocks_match_onnxruntime(tmp_path, preset, gate):
    model, shape = _mbconv_model(gate)
    inputs = {"x": digits_like_input(shape, seed=5)}
    artifact = slimtvm.compile(model, str(tmp_path / "se.so"), target=preset)
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
    kernels = next(p for p in artifact.manifest["passes"] if p["name"] == "kernels")
    assert kernels["generic_fallbacks"] == []
    assert kernels["by_family"].get("conv2d", 0) == 4 and kernels["by_family"].get("depthwise", 0) == 1
