"""Random structurally pruned graphs for the exact channel removal: a conv with whole zero filters
(or BN scales of zero, as network slimming leaves them), then BN, an activation, a pool or a
depthwise conv, a residual add or a concat or a second reader, and a consumer (a conv, some of
whose input channels may be zero everywhere, or a global-pool → Gemm head)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st
from onnx_builders import GraphBuilder


@dataclass(frozen=True)
class DeadChannelSpec:
    cin: int
    mid: int
    size: int
    kernel: int
    stride: int
    pads: tuple
    zero_filters: float  # share of the first conv's filters that are zero
    slimming: bool  # zero BN scales instead of zero weights
    activation: str  # none, relu, clip, silu, leakyrelu
    middle: str  # none, maxpool, avgpool, avgpool_with_pad, depthwise
    around: str  # none, residual, concat, fork
    consumer: str  # conv3, conv1_stride2, head
    dead_inputs: bool  # a quarter of the consumer's input channels are zero in every filter
    batch: int
    seed: int

    @property
    def removable(self) -> bool:
        """Whether every zero filter must be removed (nothing but channel-wise ops before a conv)."""
        return self.around == "none"


@st.composite
def dead_channel_specs(draw) -> DeadChannelSpec:
    kernel = draw(st.sampled_from([1, 3]))
    return DeadChannelSpec(
        cin=draw(st.integers(2, 24)),
        mid=draw(st.sampled_from([4, 8, 16, 24, 32, 40])),
        size=draw(st.integers(5, 14)),
        kernel=kernel,
        stride=draw(st.sampled_from([1, 1, 2])),
        pads=tuple(draw(st.integers(0, kernel - 1)) for _ in range(4)),
        zero_filters=draw(st.sampled_from([0.25, 0.5, 0.75, 1.0])),
        slimming=draw(st.booleans()),
        activation=draw(st.sampled_from(["none", "relu", "relu", "clip", "silu", "leakyrelu"])),
        middle=draw(st.sampled_from(["none", "none", "maxpool", "avgpool", "avgpool_with_pad", "depthwise"])),
        around=draw(st.sampled_from(["none", "none", "residual", "concat", "fork"])),
        consumer=draw(st.sampled_from(["conv3", "conv3", "conv1_stride2", "head"])),
        dead_inputs=draw(st.booleans()),
        batch=draw(st.sampled_from([1, 1, 2])),
        seed=draw(st.integers(0, 2**16)),
    )


def _batchnorm(g: GraphBuilder, x: str, channels: int, zero_scales=None) -> str:
    gamma = g.rng.uniform(0.5, 1.5, size=channels)
    if zero_scales is not None:
        gamma[zero_scales] = 0.0
    params = [gamma, g.rng.normal(0, 0.5, size=channels), g.rng.normal(0, 0.3, size=channels), g.rng.uniform(0.5, 2.0, size=channels)]
    return g.node("BatchNormalization", [x, *(g.const(p, "bn") for p in params)], epsilon=1e-5)


def _activation(g: GraphBuilder, x: str, kind: str) -> str:
    if kind == "relu":
        return g.relu(x)
    if kind == "clip":
        return g.node("Clip", [x, g.const(0.0, "lo"), g.const(6.0, "hi")])
    if kind == "silu":
        return g.node("Mul", [x, g.node("Sigmoid", [x])])
    if kind == "leakyrelu":
        return g.node("LeakyRelu", [x], alpha=0.1)
    return x


def _middle(g: GraphBuilder, x: str, kind: str, channels: int) -> str:
    if kind == "maxpool":
        return g.node("MaxPool", [x], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])
    if kind == "avgpool":
        return g.node("AveragePool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=0)
    if kind == "avgpool_with_pad":
        return g.node("AveragePool", [x], kernel_shape=[2, 2], strides=[1, 1], pads=[1, 1, 0, 0], count_include_pad=1)
    if kind == "depthwise":
        return _batchnorm(g, g.conv(x, channels, channels, kernel=3, pads=(1, 1, 1, 1), groups=channels), channels)
    return x


def dead_channel_graph(spec: DeadChannelSpec):
    """``(model, inputs, zero filter count)`` for ``spec`` (see the module docstring)."""
    g = GraphBuilder(seed=spec.seed)
    x = g.input([spec.batch, spec.cin, spec.size, spec.size])
    zeros = g.rng.choice(spec.mid, max(1, int(round(spec.zero_filters * spec.mid))), replace=False)
    weight = g.rng.normal(0, np.sqrt(2.0 / (spec.cin * spec.kernel**2)), size=(spec.mid, spec.cin, spec.kernel, spec.kernel))
    if not spec.slimming:
        weight[zeros] = 0.0
    y = g.node(
        "Conv",
        [x, g.const(weight), g.const(g.rng.normal(0, 0.3, size=spec.mid), "b")],
        kernel_shape=[spec.kernel] * 2,
        strides=[spec.stride] * 2,
        pads=list(spec.pads),
    )
    y = _batchnorm(g, y, spec.mid, zeros if spec.slimming else None)
    y = _activation(g, y, spec.activation)
    y = _middle(g, y, spec.middle, spec.mid)
    channels = spec.mid
    outputs = []
    if spec.around in ("residual", "concat"):
        # a branch of the same geometry: a conv like the first one (and the same pool)
        side = g.conv(x, spec.cin, spec.mid, kernel=spec.kernel, stride=spec.stride, pads=spec.pads)
        if spec.middle.startswith("avgpool"):
            side = _middle(g, side, spec.middle, spec.mid)
        if spec.around == "residual":
            y = g.node("Add", [y, side])
        else:
            y = g.node("Concat", [side, y], axis=1)
            channels = 2 * spec.mid
    elif spec.around == "fork":
        outputs.append(g.conv(y, spec.mid, 4, kernel=1))
    if spec.consumer == "head":
        pooled = g.node("Flatten", [g.node("GlobalAveragePool", [y])])
        out = g.gemm(pooled, channels, 7)
    else:
        kernel, stride, pads = (3, 1, (1, 1, 1, 1)) if spec.consumer == "conv3" else (1, 2, (0, 0, 0, 0))
        consumer = g.rng.normal(0, np.sqrt(2.0 / (channels * kernel**2)), size=(8, channels, kernel, kernel))
        if spec.dead_inputs:
            consumer[:, g.rng.choice(channels, max(1, channels // 4), replace=False)] = 0.0
        out = g.node(
            "Conv", [y, g.const(consumer), g.const(g.rng.normal(0, 0.1, size=8), "b")], kernel_shape=[kernel] * 2, strides=[stride] * 2, pads=list(pads)
        )
    model = g.model([out] + outputs)
    inputs = {"x": np.random.default_rng(spec.seed + 1).standard_normal((spec.batch, spec.cin, spec.size, spec.size)).astype(np.float32)}
    return model, inputs, len(zeros)
