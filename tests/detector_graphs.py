"""A small detector in the shape of YOLOv8 (ultralytics export), for the shape-folding tests and
the detector benchmark's smoke run: Conv + SiLU, C2f channel splits whose Slice bounds are
computed from ``Shape`` (as ultralytics exports ``chunk``), SPPF max-pools, nearest upsampling,
concats, and a head that reshapes with a shape built from ``Shape → Gather → Unsqueeze →
Concat`` and decodes boxes with a DFL softmax."""

from __future__ import annotations

import numpy as np
from onnx_builders import GraphBuilder


def silu(g: GraphBuilder, x: str) -> str:
    return g.node("Mul", [x, g.node("Sigmoid", [x])])


def conv_silu(g: GraphBuilder, x: str, cin: int, cout: int, kernel: int = 1, stride: int = 1) -> str:
    pad = kernel // 2
    return silu(g, g.conv(x, cin, cout, kernel=kernel, stride=stride, pads=(pad, pad, pad, pad)))


def shape_dim(g: GraphBuilder, x: str, axis: int) -> str:
    """``x.shape[axis]`` as a 1-element int64 tensor, as torch's exporter writes it."""
    scalar = g.node("Gather", [g.node("Shape", [x]), g.const(np.array(axis), "i", np.int64)], axis=0)
    return g.node("Unsqueeze", [scalar, g.const([0], "axes", np.int64)])


def c2f(g: GraphBuilder, x: str, cin: int, cout: int) -> str:
    """YOLOv8's C2f with one bottleneck: the 1×1 conv's output split in two halves by Slice
    bounds computed from its shape."""
    y = conv_silu(g, x, cin, cout)
    half = g.node("Div", [shape_dim(g, y, 1), g.const([2], "two", np.int64)])
    whole = g.node("Mul", [half, g.const([2], "two", np.int64)])
    axis = g.const([1], "axis", np.int64)
    first = g.node("Slice", [y, g.const([0], "zero", np.int64), half, axis])
    second = g.node("Slice", [y, half, whole, axis])
    c = cout // 2
    bottleneck = g.node("Add", [second, conv_silu(g, conv_silu(g, second, c, c, 3), c, c, 3)])
    return conv_silu(g, g.node("Concat", [first, second, bottleneck], axis=1), 3 * c, cout)


def sppf(g: GraphBuilder, x: str, channels: int) -> str:
    y = conv_silu(g, x, channels, channels // 2)
    pools = [y]
    for _ in range(3):
        pools.append(g.node("MaxPool", [pools[-1]], kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2]))
    return conv_silu(g, g.node("Concat", pools, axis=1), 2 * channels, channels)


def yolo_like_detector(seed: int = 0, size: int = 64, width: int = 16, classes: int = 6) -> "onnx.ModelProto":  # noqa: F821
    g = GraphBuilder(seed)
    x = g.input([1, 3, size, size], name="images")
    p1 = conv_silu(g, x, 3, width, 3, 2)
    p2 = c2f(g, conv_silu(g, p1, width, 2 * width, 3, 2), 2 * width, 2 * width)
    p3 = sppf(g, c2f(g, conv_silu(g, p2, 2 * width, 4 * width, 3, 2), 4 * width, 4 * width), 4 * width)
    scales = g.const([1.0, 1.0, 2.0, 2.0], "scales")
    up = g.node("Resize", [p3, "", scales], mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    n2 = c2f(g, g.node("Concat", [up, p2], axis=1), 6 * width, 2 * width)
    outputs = []
    bins = 4
    for feature, channels in ((n2, 2 * width), (p3, 4 * width)):
        head = g.conv(conv_silu(g, feature, channels, channels, 3), channels, 4 * bins + classes, kernel=1)
        batch = shape_dim(g, head, 0)
        flat_shape = g.node("Concat", [batch, g.const([4 * bins + classes, -1], "dims", np.int64)], axis=0)
        outputs.append(g.node("Reshape", [head, flat_shape]))
    anchors = g.node("Concat", outputs, axis=2)
    count = shape_dim(g, anchors, 2)
    box_logits = g.node("Slice", [anchors, g.const([0], "zero", np.int64), g.const([4 * bins], "end", np.int64), g.const([1], "axis", np.int64)])
    scores = g.node(
        "Sigmoid",
        [g.node("Slice", [anchors, g.const([4 * bins], "start", np.int64), g.const([4 * bins + classes], "end", np.int64), g.const([1], "axis", np.int64)])],
    )
    dfl_shape = g.node("Concat", [shape_dim(g, anchors, 0), g.const([4, bins], "dims", np.int64), count], axis=0)
    distribution = g.node("Softmax", [g.node("Transpose", [g.node("Reshape", [box_logits, dfl_shape])], perm=[0, 2, 1, 3])], axis=1)
    expectation = g.node("Conv", [distribution, g.const(np.arange(bins, dtype=np.float32).reshape(1, bins, 1, 1), "dfl")], kernel_shape=[1, 1])
    boxes = g.node("Reshape", [expectation, g.node("Concat", [shape_dim(g, anchors, 0), g.const([4], "four", np.int64), count], axis=0)])
    return g.model(g.node("Concat", [boxes, scores], axis=1))
