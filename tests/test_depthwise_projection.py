"""A depthwise conv and the 1×1 conv that alone reads it run as one kernel
(schedules/depthwise_projection.py, lowered by lowering/depthwise_projections.py): the inverted
residual blocks of MobileNetV2 on images of 28×28 or more. Each model is compiled for every x86
kernel variant the host runs and matched against onnxruntime on the original ONNX model; the
manifest says which pairs were fused, and the layer records name the fused kernel for both
convs. Pairs the kernel does not take (a depthwise output read twice, a small image, a stride-2
depthwise conv on a large image) keep their two kernels and still match."""

from __future__ import annotations

import pytest
from conftest import assert_outputs_match, onnxruntime_outputs, run_under_emulation, x86_kernel_presets
from onnx_builders import GraphBuilder, digits_like_input

import slimtvm


def _inverted_residual(
    size: int = 32,
    channels: int = 24,
    expanded: int = 144,
    kernel: int = 3,
    stride: int = 1,
    activation: str = "clip",
    dw_bias: bool = True,
    extra_reader: bool = False,
):
    """1×1 expansion (batch norm, activation) → k×k depthwise conv (activation) → 1×1
    projection (batch norm), plus the residual where the shapes allow it; ``extra_reader``: the
    depthwise output is also summed into the model's second output."""
    g = GraphBuilder(seed=size + kernel + stride)
    x = g.input([1, channels, size, size])

    def act(y):
        if activation == "relu":
            return g.relu(y)
        return g.node("Clip", [y, g.const(0.0, "lo"), g.const(6.0, "hi")])

    pad = kernel // 2
    y = act(g.batchnorm(g.conv(x, channels, expanded, kernel=1, bias=False), expanded))
    dw = act(g.conv(y, expanded, expanded, kernel=kernel, stride=stride, pads=(pad, pad, pad, pad), groups=expanded, bias=dw_bias))
    out = g.batchnorm(g.conv(dw, expanded, channels, kernel=1, bias=False), channels)
    if stride == 1:
        out = g.node("Add", [x, out])
    outputs = [out, g.node("ReduceSum", [dw], keepdims=0)] if extra_reader else out
    return g.model(outputs), {"x": digits_like_input([1, channels, size, size], seed=size)}


def _fused(artifact) -> int:
    return next(p for p in artifact.manifest["passes"] if p["name"] == "depthwise_projections")["fused"]


def _conv_kernels(artifact) -> list:
    return [layer["kernel"] for layer in artifact.manifest["layers"] if layer["op"] == "conv2d"]


@pytest.mark.parametrize("preset", x86_kernel_presets())
@pytest.mark.parametrize(
    "form",
    [
        {},  # MobileNetV2's block: ReLU6 (Clip), a bias on the depthwise conv, the residual add
        {"activation": "relu", "dw_bias": False, "kernel": 5, "channels": 32, "expanded": 96, "size": 28},
        {"stride": 2, "size": 56},  # MobileNetV2's 56 → 28 block
        {"channels": 96, "expanded": 192, "size": 28},  # 6 or 12 output blocks: several register tiles of them on AVX2
    ],
    ids=["relu6_3x3", "relu_5x5_no_bias", "stride_2", "wide_projection"],
)
def test_depthwise_and_projection_fuse_and_match_onnxruntime(tmp_path, preset, form):
    model, inputs = _inverted_residual(**form)
    artifact = slimtvm.compile(model, str(tmp_path / "block.so"), target=preset)
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
    assert _fused(artifact) == 1
    assert _conv_kernels(artifact) == ["conv2d", "depthwise_projection", "depthwise_projection"]
    kernels = next(p for p in artifact.manifest["passes"] if p["name"] == "kernels")
    assert kernels["generic_fallbacks"] == [] and kernels["by_family"].get("depthwise_projection") == 1, kernels


@pytest.mark.parametrize(
    "form",
    [{"stride": 2, "size": 112, "channels": 8, "expanded": 32}, {"extra_reader": True}, {"size": 14}],
    ids=["stride_2_from_a_large_image", "depthwise_read_twice", "small_image"],
)
def test_pairs_the_fused_kernel_does_not_take_keep_two_kernels(tmp_path, form):
    model, inputs = _inverted_residual(**form)
    preset = x86_kernel_presets()[-1]
    artifact = slimtvm.compile(model, str(tmp_path / "block.so"), target=preset)
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
    assert _fused(artifact) == 0
    assert _conv_kernels(artifact) == ["conv2d", "depthwise", "conv2d"]


@pytest.mark.aarch64
def test_depthwise_and_projection_fuse_and_run_under_emulation(arm_python, tmp_path):
    """The NEON build (8-channel blocks of 4-lane vectors), run under qemu with TVM's runtime only."""
    model, inputs = _inverted_residual(channels=16, expanded=96, size=28)
    artifact = slimtvm.compile(model, str(tmp_path / "block.so"), target="aarch64")
    assert _fused(artifact) == 1
    assert_outputs_match(run_under_emulation(arm_python, artifact.library_path, inputs, tmp_path), onnxruntime_outputs(model, inputs))
