"""Random binarized ONNX graphs for the property tests (hypothesis strategies and a seeded variant).

A graph: ``Sign (or Larq's sign(sign(x) + 0.1) between NHWC transposes, or a 2-bit quantizer in
the DoReFa or QONNX Quant form)
[→ Pad of 0 or ±1] → Conv (±α per channel) [→ BatchNorm (negative scales allowed)] [→ MaxPool]
[→ Sign → Conv 3×3 pad 1 [+ residual]]``, or ``Sign → MatMul (±α)``. Without a residual, slimtvm
fuses the BN (and pool) before the second Sign into integer thresholds. A *probe* copy of each
graph also outputs the value that feeds the second Sign, for onnxruntime only, so a test can see
whether a float sum landed within rounding distance of the threshold (the one allowed difference)
instead of loosening tolerances.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st
from onnx_builders import GraphBuilder


@dataclass(frozen=True)
class ConvSpec:
    cin: int
    cout: int
    kernel: int
    stride: int
    dilation: int
    pads: tuple
    groups: int
    size: int
    batchnorm: bool
    maxpool: bool
    second: int  # output channels of a second binary conv (0: none)
    residual: bool
    seed: int
    activation_bits: int = 1  # 2: the first conv's input is a 2-bit unipolar quantizer, not Sign
    padding: str = "conv"  # the first conv's padding: its own ("conv"), or an explicit Pad of value 0, +1 or −1 ("0", "1", "-1")
    larq: bool = False  # the first binarizer as Larq exports it: NHWC transposes around sign(sign(x) + 0.1) [and the Pad]
    quant_step: float = 0.0  # 2-bit input as QONNX's Quant writes it, round(clip(x / step, 0, 3))·step (0: the DoReFa form)


@st.composite
def conv_specs(draw) -> ConvSpec:
    groups = draw(st.sampled_from([1, 1, 1, 2, 4]))
    cin = groups * draw(st.integers(1, 72 // groups))
    cout = groups * draw(st.integers(1, 72 // groups))
    kernel = draw(st.sampled_from([1, 2, 3, 3, 5]))
    dilation = draw(st.sampled_from([1, 1, 2]))
    stride = draw(st.sampled_from([1, 1, 2, 3]))
    pads = tuple(draw(st.integers(0, min(2, (kernel - 1) * dilation))) for _ in range(4))
    effective = (kernel - 1) * dilation + 1
    size = draw(st.integers(max(1, effective - min(pads[0] + pads[2], pads[1] + pads[3])), 12))
    out = (size + min(pads[0] + pads[2], pads[1] + pads[3]) - effective) // stride + 1
    batchnorm = draw(st.booleans())
    maxpool = draw(st.booleans()) and out >= 2
    second = draw(st.sampled_from([0, 0, cout, 8, 33]))
    residual = second == cout and draw(st.booleans())
    bits = draw(st.sampled_from([1, 1, 1, 2])) if groups == 1 else 1
    seed = draw(st.integers(0, 2**16))
    padding = draw(st.sampled_from(["conv", "conv", "0", "1", "-1"] if groups == 1 and bits == 1 else ["conv", "0"]))
    larq = bits == 1 and draw(st.booleans())
    step = draw(st.sampled_from([0.0, 0.3, 0.45])) if bits == 2 else 0.0
    return ConvSpec(cin, cout, kernel, stride, dilation, pads, groups, size, batchnorm, maxpool, second, residual, seed, bits, padding, larq, step)


def quantize_unit(g: GraphBuilder, x: str, bits: int) -> str:
    """DoReFa-style k-bit activation as exported: Clip(0, 1) → Mul(L) → Round → Div(L)."""
    levels = np.float32(2**bits - 1)
    clipped = g.node("Clip", [x, g.const(np.float32(0.0), "lo"), g.const(np.float32(1.0), "hi")])
    return g.node("Div", [g.node("Round", [g.node("Mul", [clipped, g.const(levels, "l")])]), g.const(levels, "l")])


def binary_weight(rng, shape) -> np.ndarray:
    """±α_c per output channel (axis 0), α_c in [0.05, 0.5]."""
    alpha = rng.uniform(0.05, 0.5, size=(shape[0],) + (1,) * (len(shape) - 1))
    return (rng.choice([-1.0, 1.0], size=shape) * alpha).astype(np.float32)


def add_binary_conv(g: GraphBuilder, x: str, spec: ConvSpec) -> tuple:
    """The spec's layers from input ``x``; returns (output, value feeding the second Sign or None)."""
    weight = binary_weight(g.rng, (spec.cout, spec.cin // spec.groups, spec.kernel, spec.kernel))
    source = g.node("Transpose", [x], perm=[0, 2, 3, 1]) if spec.larq else x
    if spec.activation_bits > 1 and spec.quant_step:
        step = g.const(np.float32(spec.quant_step), "step")
        clipped = g.node("Clip", [g.node("Div", [source, step]), g.const(np.float32(0.0), "lo"), g.const(np.float32(2**spec.activation_bits - 1), "hi")])
        binarized = g.node("Mul", [g.node("Round", [clipped]), step])
    elif spec.activation_bits > 1:
        binarized = quantize_unit(g, source, spec.activation_bits)
    elif spec.larq:
        binarized = g.node("Sign", [g.node("Add", [g.node("Sign", [source]), g.const(np.float32(0.1), "c")])])
    else:
        binarized = g.node("Sign", [source])
    if spec.padding != "conv":
        top, left, bottom, right = spec.pads
        pads = [0, top, left, 0, 0, bottom, right, 0] if spec.larq else [0, 0, top, left, 0, 0, bottom, right]
        binarized = g.node("Pad", [binarized, g.const(pads, "pads", dtype=np.int64), g.const(np.float32(float(spec.padding)), "value")])
    if spec.larq:
        binarized = g.node("Transpose", [binarized], perm=[0, 3, 1, 2])
    y = g.node(
        "Conv",
        [binarized, g.const(weight)],
        kernel_shape=[spec.kernel] * 2,
        strides=[spec.stride] * 2,
        pads=list(spec.pads) if spec.padding == "conv" else [0, 0, 0, 0],
        dilations=[spec.dilation] * 2,
        group=spec.groups,
    )
    if spec.batchnorm:
        y = g.batchnorm(y, spec.cout, negative_scales=True)
    if spec.maxpool:
        y = g.node("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])
    if not spec.second:
        return y, None
    pre_sign = y
    weight = binary_weight(g.rng, (spec.second, spec.cout, 3, 3))
    z = g.node("Conv", [g.node("Sign", [y]), g.const(weight)], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    if spec.residual:
        z = g.node("Add", [z, y])
    return z, pre_sign


def conv_graph(spec: ConvSpec):
    """(model, inputs, probe): ``probe`` is None without a second Sign, else (the model with the
    pre-Sign value as a second output, that output's name)."""
    g = GraphBuilder(seed=spec.seed)
    x = g.input([1, spec.cin, spec.size, spec.size])
    out, pre_sign = add_binary_conv(g, x, spec)
    model = g.model(out)
    probe = (g.model([out, pre_sign]), pre_sign) if pre_sign else None
    inputs = {"x": np.random.default_rng(spec.seed + 1).standard_normal((1, spec.cin, spec.size, spec.size)).astype(np.float32)}
    return model, inputs, probe


def sign_margin_ok(probe, inputs, run) -> bool:
    """False when the probe's pre-Sign value has an element within rounding distance of 0
    (``run`` = onnxruntime's runner)."""
    if probe is None:
        return True
    model, name = probe
    return not near_threshold(run(model, inputs)[name])


@st.composite
def dense_specs(draw) -> tuple:
    return draw(st.integers(1, 3)), draw(st.integers(1, 200)), draw(st.integers(1, 70)), draw(st.integers(0, 2**16))


def dense_graph(rows: int, features: int, outputs: int, seed: int):
    g = GraphBuilder(seed=seed)
    x = g.input([rows, features])
    y = g.node("MatMul", [g.node("Sign", [x]), g.const(binary_weight(g.rng, (outputs, features)).T.copy())])
    inputs = {"x": np.random.default_rng(seed + 1).standard_normal((rows, features)).astype(np.float32)}
    return g.model(y), inputs


def near_threshold(pre_sign: np.ndarray) -> bool:
    """True when some value feeding a Sign is within float rounding of 0: 1e-5 relative to the
    largest value, and at least 1e-5 absolute (a sum that cancels exactly leaves rounding noise
    of its terms, ~1e-11 here, which a tensor of such values alone would otherwise hide)."""
    scale = max(float(np.max(np.abs(pre_sign))), 1.0)
    return bool(np.any(np.abs(pre_sign) <= 1e-5 * scale))
