"""ResNet-18, MobileNetV2 and ResNeXt-50 written directly in ONNX (torchvision's layer shapes,
random weights).

torchvision cannot be installed next to this machine's local torch, and the ONNX graphs are all
a benchmark needs: the same convolutions, batch norms, activations, pools and classifier as
torchvision's ``resnet18()``, ``mobilenet_v2()`` and ``resnext50_32x4d()``, in inference form (BatchNormalization nodes
kept, so slimtvm's folding runs as it would on an exported model). Weights are seeded He-normal.
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from onnx_builders import GraphBuilder  # noqa: E402


def _conv_bn(g, x, cin, cout, kernel, stride=1, groups=1, act="relu"):
    pad = kernel // 2
    y = g.batchnorm(g.conv(x, cin, cout, kernel=kernel, stride=stride, pads=(pad,) * 4, groups=groups, bias=False), cout)
    if act == "relu":
        return g.relu(y)
    if act == "relu6":
        return g.node("Clip", [y, g.const(np.float32(0.0), "clip"), g.const(np.float32(6.0), "clip")])
    return y


def resnet18(seed: int = 0):
    """torchvision resnet18: 7×7/2 stem, max-pool, 4 stages of 2 BasicBlocks, global pool, FC 1000."""
    g = GraphBuilder(seed)
    x = g.input([1, 3, 224, 224], name="input")
    x = _conv_bn(g, x, 3, 64, 7, stride=2)
    x = g.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    channels = 64
    for stage, width in enumerate((64, 128, 256, 512)):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            y = _conv_bn(g, x, channels, width, 3, stride=stride)
            y = _conv_bn(g, y, width, width, 3, act=None)
            shortcut = x if stride == 1 and channels == width else _conv_bn(g, x, channels, width, 1, stride=stride, act=None)
            x = g.relu(g.node("Add", [y, shortcut]))
            channels = width
    x = g.node("Flatten", [g.node("GlobalAveragePool", [x])])
    return g.model(g.gemm(x, 512, 1000))


def mobilenet_v2(seed: int = 0):
    """torchvision mobilenet_v2: inverted residual blocks with ReLU6, 1280-wide head, FC 1000."""
    g = GraphBuilder(seed)
    x = g.input([1, 3, 224, 224], name="input")
    x = _conv_bn(g, x, 3, 32, 3, stride=2, act="relu6")
    channels = 32
    for expand, width, repeats, first_stride in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)):
        for index in range(repeats):
            stride = first_stride if index == 0 else 1
            hidden = channels * expand
            y = x if expand == 1 else _conv_bn(g, x, channels, hidden, 1, act="relu6")
            y = _conv_bn(g, y, hidden, hidden, 3, stride=stride, groups=hidden, act="relu6")
            y = _conv_bn(g, y, hidden, width, 1, act=None)
            x = g.node("Add", [x, y]) if stride == 1 and channels == width else y
            channels = width
    x = _conv_bn(g, x, channels, 1280, 1, act="relu6")
    x = g.node("Flatten", [g.node("GlobalAveragePool", [x])])
    return g.model(g.gemm(x, 1280, 1000))


def resnext50(seed: int = 0):
    """torchvision resnext50_32x4d: 7×7/2 stem, max-pool, 4 stages of 3, 4, 6, 3 bottlenecks whose
    3×3 convs have 32 groups (4 to 32 channels each; stride in the 3×3 conv), global pool, FC 1000."""
    g = GraphBuilder(seed)
    x = g.input([1, 3, 224, 224], name="input")
    x = _conv_bn(g, x, 3, 64, 7, stride=2)
    x = g.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    channels = 64
    for stage, (planes, blocks) in enumerate(((64, 3), (128, 4), (256, 6), (512, 3))):
        width, out = planes * 2, planes * 4
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            y = _conv_bn(g, x, channels, width, 1)
            y = _conv_bn(g, y, width, width, 3, stride=stride, groups=32)
            y = _conv_bn(g, y, width, out, 1, act=None)
            shortcut = x if block > 0 else _conv_bn(g, x, channels, out, 1, stride=stride, act=None)
            x = g.relu(g.node("Add", [y, shortcut]))
            channels = out
    x = g.node("Flatten", [g.node("GlobalAveragePool", [x])])
    return g.model(g.gemm(x, 2048, 1000))


ARCHITECTURES = {"resnet18": resnet18, "mobilenet_v2": mobilenet_v2, "resnext50": resnext50}
