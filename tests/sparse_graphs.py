"""Random pruned conv graphs for the sparse property tests: a conv with a random sparsity level
and pattern (zero filters and zero input channels included), in any geometry, with batch norm,
ReLU, a residual add or a concat with a second conv around it, and a second pruned conv after."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st
from onnx_builders import GraphBuilder


@dataclass(frozen=True)
class SparseSpec:
    cin: int
    cout: int
    size: int
    kernel: int
    stride: int
    dilation: int
    pads: tuple
    groups: str  # "1", "depthwise" or "2"
    zeros: float  # share of zero weights (the smallest |w|, or a random pattern)
    pattern: str  # "magnitude", "random", "filters" (whole zero filters too), "inputs" (zero input channels too)
    batchnorm: bool
    around: str  # "none", "residual" or "concat"
    batch: int
    seed: int


@st.composite
def sparse_specs(draw) -> SparseSpec:
    kernel = draw(st.sampled_from([1, 3, 3, 5]))
    dilation = draw(st.sampled_from([1, 1, 2])) if kernel > 1 else 1
    reach = (kernel - 1) * dilation
    pads = tuple(draw(st.integers(0, reach)) for _ in range(4))
    groups = draw(st.sampled_from(["1", "1", "1", "depthwise", "2"]))
    cin = draw(st.integers(2, 40))
    cout = cin if groups == "depthwise" else draw(st.sampled_from([8, 16, 24, 32, 48, 5, 13]))
    if groups == "2":
        cin, cout = 2 * max(1, cin // 2), 2 * max(1, cout // 2)
    size = draw(st.integers(max(3, reach + 1), 18))
    return SparseSpec(
        cin=cin,
        cout=cout,
        size=size,
        kernel=kernel,
        stride=draw(st.sampled_from([1, 1, 2, 3])),
        dilation=dilation,
        pads=pads,
        groups=groups,
        zeros=draw(st.sampled_from([0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0])),
        pattern=draw(st.sampled_from(["magnitude", "random", "filters", "inputs"])),
        batchnorm=draw(st.booleans()),
        around=draw(st.sampled_from(["none", "residual", "concat"])),
        batch=draw(st.sampled_from([1, 1, 2])),
        seed=draw(st.integers(0, 2**16)),
    )


def prune(weight: np.ndarray, zeros: float, pattern: str, rng) -> np.ndarray:
    """``weight`` with the ``zeros`` share of its entries set to 0: the smallest magnitudes (L1
    unstructured) or a random choice; ``filters``/``inputs`` also zero a quarter of the output or
    input channels whole."""
    weight = weight.copy()
    flat = weight.reshape(-1)
    cut = int(round(zeros * flat.size))
    order = np.argsort(np.abs(flat), kind="stable") if pattern == "magnitude" else rng.permutation(flat.size)
    flat[order[:cut]] = 0
    if pattern == "filters" and weight.shape[0] > 1:
        weight[rng.choice(weight.shape[0], max(1, weight.shape[0] // 4), replace=False)] = 0
    if pattern == "inputs" and weight.shape[1] > 1:
        weight[:, rng.choice(weight.shape[1], max(1, weight.shape[1] // 4), replace=False)] = 0
    return weight


def _pruned_conv(g: GraphBuilder, x: str, spec: SparseSpec, cin: int, cout: int, kernel: int, stride: int, dilation: int, pads, groups: int) -> str:
    rng = g.rng
    weight = rng.normal(0, np.sqrt(2.0 / (cin // groups * kernel * kernel)), size=(cout, cin // groups, kernel, kernel))
    weight = prune(weight, spec.zeros, spec.pattern, rng)
    inputs = [x, g.const(weight), g.const(rng.normal(0, 0.1, size=cout), "b")]
    return g.node("Conv", inputs, kernel_shape=[kernel, kernel], strides=[stride, stride], pads=list(pads), dilations=[dilation, dilation], group=groups)


def sparse_graph(spec: SparseSpec):
    """``(model, inputs)``: conv (pruned) → [BN] → ReLU → [residual add | concat] → a pruned 3×3 conv."""
    g = GraphBuilder(seed=spec.seed)
    x = g.input([spec.batch, spec.cin, spec.size, spec.size])
    groups = {"1": 1, "depthwise": spec.cin, "2": 2}[spec.groups]
    y = _pruned_conv(g, x, spec, spec.cin, spec.cout, spec.kernel, spec.stride, spec.dilation, spec.pads, groups)
    if spec.batchnorm:
        y = g.batchnorm(y, spec.cout)
    y = g.relu(y)
    same_shape = (
        spec.stride == 1
        and spec.pads[0] + spec.pads[2] == (spec.kernel - 1) * spec.dilation
        and spec.pads[1] + spec.pads[3] == (spec.kernel - 1) * spec.dilation
    )
    if spec.around == "residual" and same_shape:
        side = _pruned_conv(g, x, spec, spec.cin, spec.cout, 1, 1, 1, (0, 0, 0, 0), 1) if spec.cin != spec.cout else x
        y = g.node("Add", [y, side])
        channels = spec.cout
    elif spec.around == "concat" and same_shape:
        y = g.node("Concat", [y, x], axis=1)
        channels = spec.cout + spec.cin
    else:
        channels = spec.cout
    y = _pruned_conv(g, y, spec, channels, 16, 3, 1, 1, (1, 1, 1, 1), 1)
    inputs = {"x": np.random.default_rng(spec.seed + 1).standard_normal((spec.batch, spec.cin, spec.size, spec.size)).astype(np.float32)}
    return g.model(y), inputs
