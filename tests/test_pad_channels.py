"""Convs of 8·k but not 16·k channels on 16-lane (AVX-512) targets: their channels are padded with
zero filters (lowering/pad_channels.py) so the whole model takes 16-channel blocks — exact against
onnxruntime, through the operations that carry the padded channels (BN, ReLU6-style clips,
residual adds, depthwise convs, pools) and those that must get the original ones back (concat,
flatten → Gemm, sigmoid gates read by a Mul with another tensor, the model's outputs)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_outputs_match, onnxruntime_outputs, x86_kernel_presets
from onnx_builders import GraphBuilder

import slimtvm
from slimtvm.targets.kernel_target import KernelTarget
from slimtvm.targets.presets import resolve_target


def mobilenet_like(seed: int = 0):
    """Stem 3→16, a 24-channel bottleneck pair with a residual, a depthwise conv on 24·6 = 144
    channels, a sigmoid gate, a scalar shift (the padded channels stop being 0), a concat with
    another padded branch, a 40-channel conv as a second output, pooling and a Gemm."""
    g = GraphBuilder(seed)
    x = g.input([1, 3, 16, 16])
    stem = g.node("Clip", [g.batchnorm(g.conv(x, 3, 16, pads=(1, 1, 1, 1), stride=2), 16), g.const(np.float32(0.0), "lo"), g.const(np.float32(6.0), "hi")])
    a = g.batchnorm(g.conv(stem, 16, 24, kernel=1), 24)  # 24 channels: padded to 32
    expand = g.relu(g.conv(a, 24, 144, kernel=1))
    depthwise = g.relu(g.conv(expand, 144, 144, pads=(1, 1, 1, 1), groups=144))
    b = g.batchnorm(g.conv(depthwise, 144, 24, kernel=1), 24)
    residual = g.node("Add", [a, b])  # both padded alike
    gate = g.node("Sigmoid", [residual])
    gated = g.node("Mul", [residual, gate])
    shifted = g.node("Add", [gated, g.const(np.float32(0.5), "shift")])  # the padded channels become 0.5…
    pooled = g.node("MaxPool", [g.conv(shifted, 24, 24, kernel=1)], kernel_shape=[2, 2], strides=[2, 2])  # … which this conv must ignore
    side = g.conv(stem, 16, 8, kernel=1)  # 8 channels (padded) next to…
    joined = g.node("Concat", [pooled, g.node("MaxPool", [side], kernel_shape=[2, 2], strides=[2, 2])], axis=1)  # … a concat: original channels
    head = g.relu(g.conv(joined, 32, 40, kernel=1))  # a 40-channel conv output of the model
    flat = g.node("Flatten", [g.node("GlobalAveragePool", [head])])
    return g.model([g.gemm(flat, 40, 10), head])


@pytest.mark.parametrize("target", x86_kernel_presets() or ["host"])
def test_padded_channels_are_exact_and_every_conv_is_blocked(tmp_path, target):
    model = mobilenet_like()
    artifact = slimtvm.compile(model, str(tmp_path / "model.so"), target=target)
    kernels = next(p for p in artifact.manifest["passes"] if p["name"] == "kernels")
    assert kernels["generic_fallbacks"] == [], kernels
    lanes = KernelTarget.of(resolve_target(target).tvm_target()).lanes
    plans = [layer["plan"] for layer in artifact.manifest["layers"] if layer["op"] == "conv2d"]
    assert all(f"NCHW{16 if lanes == 16 else 8}c" in plan for plan in plans), plans
    runner = artifact.load()
    for seed in range(3):
        inputs = {"x": np.random.default_rng(seed).standard_normal((1, 3, 16, 16)).astype(np.float32)}
        assert_outputs_match(runner.run(inputs), onnxruntime_outputs(model, inputs))


@pytest.mark.parametrize("target", x86_kernel_presets() or ["host"])
def test_a_padded_tensor_is_never_a_divisor(tmp_path, target):
    """``y / y`` on a padded 24-channel tensor would put 0 / 0 = NaN in the extra channels, and a
    zero weight times NaN is NaN in every output of the next conv: the division reads the original
    channels instead."""
    g = GraphBuilder(seed=4)
    x = g.input([1, 8, 8, 8])
    y = g.conv(x, 8, 24, kernel=3, pads=(1, 1, 1, 1))
    ratio = g.node("Div", [y, y])
    model = g.model(g.conv(g.node("Add", [ratio, y]), 24, 16, kernel=1))
    runner = slimtvm.compile(model, str(tmp_path / "model.so"), target=target).load()
    inputs = {"x": np.random.default_rng(5).standard_normal((1, 8, 8, 8)).astype(np.float32)}
    assert_outputs_match(runner.run(inputs), onnxruntime_outputs(model, inputs))


@pytest.mark.parametrize("target", x86_kernel_presets() or ["host"])
def test_a_depthwise_conv_after_a_channel_shuffle_gets_its_input_padded(tmp_path, target):
    """ShuffleNet v1's unit: a grouped 1×1 conv (split per group), a channel shuffle (reshape,
    transpose, reshape), a depthwise conv on 40 channels, whose input no padded conv wrote. Its
    input gets zero channels up to the block and the model keeps whole blocks (the light
    ShuffleNet's 136-channel depthwise convs had put it in 8-channel blocks on 16-lane targets:
    3.33 → 2.62 ms); exact against onnxruntime, also with the padded channels shifted by a
    per-channel bias before a conv reads them."""
    g = GraphBuilder(seed=6)
    x = g.input([1, 16, 10, 10])
    grouped = g.relu(g.conv(x, 16, 40, kernel=1, groups=4))
    shuffled = g.node(
        "Reshape",
        [
            g.node("Transpose", [g.node("Reshape", [grouped, g.const(np.array([1, 4, 10, 10, 10]), "shape", np.int64)])], perm=[0, 2, 1, 3, 4]),
            g.const(np.array([1, 40, 10, 10]), "shape", np.int64),
        ],
    )
    depthwise = g.batchnorm(g.conv(shuffled, 40, 40, pads=(1, 1, 1, 1), groups=40), 40)
    shifted = g.node("Add", [depthwise, g.const(np.linspace(-1, 1, 40, dtype=np.float32).reshape(1, 40, 1, 1), "bias")])
    model = g.model(g.node("Add", [g.conv(shifted, 40, 40, kernel=1, groups=4), grouped]))
    artifact = slimtvm.compile(model, str(tmp_path / "model.so"), target=target)
    lanes = KernelTarget.of(resolve_target(target).tvm_target()).lanes
    plans = [layer["plan"] for layer in artifact.manifest["layers"] if layer["op"] == "conv2d"]
    assert all(f"NCHW{16 if lanes == 16 else 8}c" in plan for plan in plans), plans
    runner = artifact.load()
    inputs = {"x": np.random.default_rng(7).standard_normal((1, 16, 10, 10)).astype(np.float32)}
    assert_outputs_match(runner.run(inputs), onnxruntime_outputs(model, inputs))


@pytest.mark.parametrize("target", x86_kernel_presets() or ["host"])
def test_a_token_matmul_gets_whole_vectors_of_columns(tmp_path, target):
    """FocalNet's projection: ``[1, tokens, C] @ W[C, 2·C + 3]`` (35 columns for C = 16) ran with
    a predicate on every vector's lanes (6× onnxruntime's time for the model). The weight gets
    zero columns up to the block and the product is sliced back on its last axis: exact."""
    from slimtvm.frontend.onnx_import import import_onnx
    from slimtvm.lowering.pad_channels import pad_channels_to_block

    g = GraphBuilder(seed=8)
    x = g.input([1, 10, 16])
    weight = g.const(np.random.default_rng(9).standard_normal((16, 35)).astype(np.float32), "w")
    bias = g.const(np.random.default_rng(10).standard_normal(35).astype(np.float32), "b")
    model = g.model(g.node("Add", [g.node("MatMul", [x, weight]), bias]))
    block = KernelTarget.of(resolve_target(target).tvm_target()).lanes
    padded = pad_channels_to_block(block)(import_onnx(model).mod).script(show_meta=True)
    assert f"R.Tensor((1, 10, {-(-35 // block) * block})" in padded and "R.strided_slice" in padded, padded
    runner = slimtvm.compile(model, str(tmp_path / "model.so"), target=target).load()
    inputs = {"x": np.random.default_rng(11).standard_normal((1, 10, 16)).astype(np.float32)}
    assert_outputs_match(runner.run(inputs), onnxruntime_outputs(model, inputs))
