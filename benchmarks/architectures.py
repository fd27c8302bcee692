"""ResNet-18, MobileNetV2, ResNeXt-50, MobileNetV3-Large, EfficientNet-B0, ConvNeXt-Tiny, a U-Net,
DeiT-Tiny and a BERT-Mini encoder written directly in ONNX (torchvision's, timm's and Hugging
Face's layer shapes, random weights).

torchvision cannot be installed next to this machine's local torch, and the ONNX graphs are all
a benchmark needs: the same convolutions, batch norms, activations, pools and classifier as
torchvision's ``resnet18()``, ``mobilenet_v2()``, ``resnext50_32x4d()``, ``mobilenet_v3_large()`` and
``efficientnet_b0()`` and ``convnext_tiny()``, in inference form (BatchNormalization nodes
kept, so slimtvm's folding runs as it would on an exported model). Weights are seeded He-normal.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from onnx import TensorProto, helper

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from onnx_builders import GraphBuilder  # noqa: E402


def _conv_bn(g, x, cin, cout, kernel, stride=1, groups=1, act="relu"):
    pad = kernel // 2
    y = g.batchnorm(g.conv(x, cin, cout, kernel=kernel, stride=stride, pads=(pad,) * 4, groups=groups, bias=False), cout)
    if act == "relu":
        return g.relu(y)
    if act == "relu6":
        return g.node("Clip", [y, g.const(np.float32(0.0), "clip"), g.const(np.float32(6.0), "clip")])
    if act == "hardswish":
        return g.node("HardSwish", [y])
    if act == "silu":
        return g.node("Mul", [y, g.node("Sigmoid", [y])])
    return y


def _make_divisible(value: float, divisor: int = 8) -> int:
    """torchvision's channel rounding (to a multiple of 8, never below 90% of ``value``)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _squeeze_excite(g, x, channels, squeezed, gate="hardsigmoid", act="relu"):
    """Global average pool → 1×1 conv → ReLU (SiLU) → 1×1 conv → hard sigmoid (sigmoid) → scale ``x``."""
    s = g.node("GlobalAveragePool", [x])
    s = g.conv(s, channels, squeezed, kernel=1)
    s = g.relu(s) if act == "relu" else g.node("Mul", [s, g.node("Sigmoid", [s])])
    s = g.conv(s, squeezed, channels, kernel=1)
    s = g.node("HardSigmoid", [s], alpha=1.0 / 6, beta=0.5) if gate == "hardsigmoid" else g.node("Sigmoid", [s])
    return g.node("Mul", [x, s])


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


# torchvision's mobilenet_v3_large settings: input, kernel, expanded, output, squeeze-excite, activation, stride
MOBILENET_V3_LARGE = (
    (16, 3, 16, 16, False, "relu", 1),
    (16, 3, 64, 24, False, "relu", 2),
    (24, 3, 72, 24, False, "relu", 1),
    (24, 5, 72, 40, True, "relu", 2),
    (40, 5, 120, 40, True, "relu", 1),
    (40, 5, 120, 40, True, "relu", 1),
    (40, 3, 240, 80, False, "hardswish", 2),
    (80, 3, 200, 80, False, "hardswish", 1),
    (80, 3, 184, 80, False, "hardswish", 1),
    (80, 3, 184, 80, False, "hardswish", 1),
    (80, 3, 480, 112, True, "hardswish", 1),
    (112, 3, 672, 112, True, "hardswish", 1),
    (112, 5, 672, 160, True, "hardswish", 2),
    (160, 5, 960, 160, True, "hardswish", 1),
    (160, 5, 960, 160, True, "hardswish", 1),
)


def mobilenet_v3_large(seed: int = 0):
    """torchvision mobilenet_v3_large: hard-swish stem, 15 inverted residual blocks (3×3 and 5×5
    depthwise convs, squeeze-excite with hard sigmoid), 960-wide last conv, FC 1280 (hard-swish), FC 1000."""
    g = GraphBuilder(seed)
    x = g.input([1, 3, 224, 224], name="input")
    x = _conv_bn(g, x, 3, 16, 3, stride=2, act="hardswish")
    for cin, kernel, expanded, cout, se, act, stride in MOBILENET_V3_LARGE:
        y = x if expanded == cin else _conv_bn(g, x, cin, expanded, 1, act=act)
        y = _conv_bn(g, y, expanded, expanded, kernel, stride=stride, groups=expanded, act=act)
        if se:
            y = _squeeze_excite(g, y, expanded, _make_divisible(expanded // 4))
        y = _conv_bn(g, y, expanded, cout, 1, act=None)
        x = g.node("Add", [x, y]) if stride == 1 and cin == cout else y
    x = _conv_bn(g, x, 160, 960, 1, act="hardswish")
    x = g.node("Flatten", [g.node("GlobalAveragePool", [x])])
    x = g.node("HardSwish", [g.gemm(x, 960, 1280)])
    return g.model(g.gemm(x, 1280, 1000))


# torchvision's efficientnet_b0 stages: expansion, kernel, stride, input, output, layers
EFFICIENTNET_B0 = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)


def efficientnet_b0(seed: int = 0):
    """torchvision efficientnet_b0: SiLU stem, 16 MBConv blocks (squeeze-excite of a quarter of the
    block's input channels, SiLU and sigmoid), 1280-wide last conv, FC 1000."""
    g = GraphBuilder(seed)
    x = g.input([1, 3, 224, 224], name="input")
    x = _conv_bn(g, x, 3, 32, 3, stride=2, act="silu")
    for expand, kernel, first_stride, cin, cout, layers in EFFICIENTNET_B0:
        for index in range(layers):
            channels, stride = (cin, first_stride) if index == 0 else (cout, 1)
            hidden = channels * expand
            y = x if expand == 1 else _conv_bn(g, x, channels, hidden, 1, act="silu")
            y = _conv_bn(g, y, hidden, hidden, kernel, stride=stride, groups=hidden, act="silu")
            y = _squeeze_excite(g, y, hidden, max(1, channels // 4), gate="sigmoid", act="silu")
            y = _conv_bn(g, y, hidden, cout, 1, act=None)
            x = g.node("Add", [x, y]) if stride == 1 and channels == cout else y
    x = _conv_bn(g, x, 320, 1280, 1, act="silu")
    x = g.node("Flatten", [g.node("GlobalAveragePool", [x])])
    return g.model(g.gemm(x, 1280, 1000))


def _layer_norm_last(g, x, channels, eps=1e-6):
    """LayerNorm over the last axis as torch exports it at opset 17 (LayerNormalization), with
    torch's initial affine parameters perturbed so that they matter."""
    scale = g.const(1.0 + 0.1 * g.rng.standard_normal(channels), "ln_scale")
    bias = g.const(0.1 * g.rng.standard_normal(channels), "ln_bias")
    return g.node("LayerNormalization", [x, scale, bias], axis=-1, epsilon=eps)


def _layer_norm_channels(g, x, channels, eps=1e-6):
    """torchvision's LayerNorm2d: permute to channels-last, LayerNorm, permute back."""
    y = g.node("Transpose", [x], perm=[0, 2, 3, 1])
    return g.node("Transpose", [_layer_norm_last(g, y, channels, eps)], perm=[0, 3, 1, 2])


def _linear_last(g, x, cin, cout):
    """nn.Linear on the last axis of a 4-D tensor: MatMul by a [cin, cout] weight, then Add."""
    weight = g.const(g.rng.standard_normal((cin, cout)) * np.sqrt(1.0 / cin), "fc")
    return g.node("Add", [g.node("MatMul", [x, weight]), g.const(0.01 * g.rng.standard_normal(cout), "fc_b")])


def _gelu(g, x):
    """Exact GELU as torch exports it before opset 20: x · (erf(x / √2) + 1) · 0.5."""
    erf = g.node("Erf", [g.node("Div", [x, g.const(np.float32(np.sqrt(2.0)), "sqrt2")])])
    return g.node("Mul", [g.node("Mul", [x, g.node("Add", [erf, g.const(np.float32(1.0), "one")])]), g.const(np.float32(0.5), "half")])


def convnext_tiny(seed: int = 0):
    """torchvision convnext_tiny: 4×4/4 stem + LayerNorm2d; stages of 3, 3, 9, 3 blocks of 96, 192,
    384, 768 channels (7×7 depthwise conv → channels-last LayerNorm → Linear ×4 → GELU → Linear
    → layer scale → residual), LayerNorm2d + 2×2/2 conv between stages; pool, LayerNorm2d, FC 1000.
    The layer scales are drawn around 0.1 (torchvision starts them at 1e-6, which would hide the
    blocks from the outputs check)."""
    g = GraphBuilder(seed)
    x = g.input([1, 3, 224, 224], name="input")
    x = _layer_norm_channels(g, g.conv(x, 3, 96, kernel=4, stride=4), 96)
    dims, depths = (96, 192, 384, 768), (3, 3, 9, 3)
    for stage, (dim, depth) in enumerate(zip(dims, depths)):
        if stage:
            x = g.conv(_layer_norm_channels(g, x, dims[stage - 1]), dims[stage - 1], dim, kernel=2, stride=2)
        for _ in range(depth):
            y = g.conv(x, dim, dim, kernel=7, pads=(3, 3, 3, 3), groups=dim)
            y = _layer_norm_last(g, g.node("Transpose", [y], perm=[0, 2, 3, 1]), dim)
            y = _linear_last(g, _gelu(g, _linear_last(g, y, dim, 4 * dim)), 4 * dim, dim)
            y = g.node("Transpose", [y], perm=[0, 3, 1, 2])
            y = g.node("Mul", [y, g.const((0.1 + 0.02 * g.rng.standard_normal(dim)).reshape(dim, 1, 1), "gamma")])
            x = g.node("Add", [x, y])
    x = _layer_norm_channels(g, g.node("GlobalAveragePool", [x]), 768)
    x = g.node("Flatten", [x])
    return g.model(g.gemm(x, 768, 1000))


def unet(seed: int = 0):
    """The original U-Net's shape at 256 × 256 (Ronneberger et al., with padded convs and batch
    norms, as most PyTorch ports): four levels of two 3×3 conv + BN + ReLU from 32 to 256
    channels with 2×2 max-pools, a 512-channel bottom, and on the way up a 2×2/2 ConvTranspose,
    the concat with the skip and two 3×3 convs per level; a 1×1 conv to 2 classes."""
    g = GraphBuilder(seed)
    x = g.input([1, 3, 256, 256], name="input")
    skips, channels = [], 3
    for width in (32, 64, 128, 256):
        x = _conv_bn(g, _conv_bn(g, x, channels, width, 3), width, width, 3)
        skips.append(x)
        x, channels = g.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2]), width
    x = _conv_bn(g, _conv_bn(g, x, channels, 512, 3), 512, 512, 3)
    channels = 512
    for width, skip in zip((256, 128, 64, 32), reversed(skips)):
        up = g.conv_transpose(x, channels, width, kernel=2, stride=2)
        x = _conv_bn(g, _conv_bn(g, g.node("Concat", [skip, up], axis=1), 2 * width, width, 3), width, width, 3)
        channels = width
    return g.model(g.conv(x, 32, 2, kernel=1))


def _attention(g, x, tokens, dim, heads):
    """timm's Attention as it exports: one qkv MatMul, Reshape to [1, tokens, 3, heads, d],
    Transpose to [3, 1, heads, tokens, d], Gather q, k, v; q · kᵀ (Transpose of k) times
    d^-½, Softmax over the keys, · v, heads back to [1, tokens, dim], the projection."""
    head_dim = dim // heads
    qkv = _linear_last(g, x, dim, 3 * dim)
    qkv = g.node("Reshape", [qkv, g.const(np.array([1, tokens, 3, heads, head_dim]), "shape", np.int64)])
    qkv = g.node("Transpose", [qkv], perm=[2, 0, 3, 1, 4])
    q, k, v = (g.node("Gather", [qkv, g.const(np.array(i), "index", np.int64)], axis=0) for i in range(3))
    scores = g.node("MatMul", [q, g.node("Transpose", [k], perm=[0, 1, 3, 2])])
    scores = g.node("Mul", [scores, g.const(np.float32(head_dim**-0.5), "scale")])
    out = g.node("MatMul", [g.node("Softmax", [scores], axis=-1), v])
    out = g.node("Transpose", [out], perm=[0, 2, 1, 3])
    out = g.node("Reshape", [out, g.const(np.array([1, tokens, dim]), "shape", np.int64)])
    return _linear_last(g, out, dim, dim)


def vision_transformer(seed: int = 0, image: int = 224, patch: int = 16, dim: int = 192, depth: int = 12, heads: int = 3, classes: int = 1000):
    """A ViT as timm exports it: ``patch``×``patch`` patch conv to ``dim`` channels, flattened to
    tokens, a class token and position embeddings; ``depth`` pre-norm blocks of ``heads``-head
    attention and a 4·``dim``-wide GELU MLP; LayerNorm, the class token, a classifier."""
    g = GraphBuilder(seed)
    tokens = (image // patch) ** 2 + 1
    x = g.input([1, 3, image, image], name="input")
    x = g.node("Reshape", [g.conv(x, 3, dim, kernel=patch, stride=patch), g.const(np.array([1, dim, tokens - 1]), "shape", np.int64)])
    x = g.node("Transpose", [x], perm=[0, 2, 1])
    x = g.node("Concat", [g.const(0.02 * g.rng.standard_normal((1, 1, dim)), "cls"), x], axis=1)
    x = g.node("Add", [x, g.const(0.02 * g.rng.standard_normal((1, tokens, dim)), "pos")])
    for _ in range(depth):
        x = g.node("Add", [x, _attention(g, _layer_norm_last(g, x, dim), tokens, dim, heads)])
        y = _linear_last(g, _gelu(g, _linear_last(g, _layer_norm_last(g, x, dim), dim, 4 * dim)), 4 * dim, dim)
        x = g.node("Add", [x, y])
    x = g.node("Gather", [_layer_norm_last(g, x, dim), g.const(np.array(0), "index", np.int64)], axis=1)
    return g.model(g.gemm(x, dim, classes))


def vit_tiny(seed: int = 0):
    """DeiT-Tiny / ViT-Ti/16 (timm's ``deit_tiny_patch16_224``): 197 tokens of 192 channels, 12
    blocks of 3 heads, FC 1000: timm's 5,717,416 parameters (the graph adds 48 float scalars of
    the attention scale and GELU, and its shapes and indices)."""
    return vision_transformer(seed)


def bert_mini(seed: int = 0, tokens: int = 128, dim: int = 256, depth: int = 4, heads: int = 4, vocab: int = 30522):
    """An encoder of BERT-Mini's shapes (Google's ``bert_uncased_L-4_H-256_A-4``: 4 layers, 256
    features, 4 heads, a 1024-wide GELU MLP) as Hugging Face exports it: ``input_ids`` and
    ``attention_mask`` inputs (int64), word embeddings by ``Gather``, position and token-type
    embeddings added, post-norm layers whose attention adds ``(1 − mask) · −10000`` to the scores
    (divided by √d); the last hidden state out."""
    g = GraphBuilder(seed)
    g.inputs.append(helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, tokens]))
    g.inputs.append(helper.make_tensor_value_info("attention_mask", TensorProto.INT64, [1, tokens]))
    x = g.node("Gather", [g.const(0.02 * g.rng.standard_normal((vocab, dim)), "word_embeddings"), "input_ids"], axis=0)
    x = g.node("Add", [x, g.const(0.02 * g.rng.standard_normal((1, tokens, dim)), "position_and_type_embeddings")])
    x = _layer_norm_last(g, x, dim, 1e-12)
    mask = g.node("Unsqueeze", [g.node("Cast", ["attention_mask"], to=TensorProto.FLOAT), g.const(np.array([1, 2]), "axes", np.int64)])
    mask = g.node("Mul", [g.node("Sub", [g.const(np.float32(1.0), "one"), mask]), g.const(np.float32(-10000.0), "masked")])
    head_dim = dim // heads
    for _ in range(depth):

        def heads_of(y):
            y = g.node("Reshape", [y, g.const(np.array([1, tokens, heads, head_dim]), "shape", np.int64)])
            return g.node("Transpose", [y], perm=[0, 2, 1, 3])

        q, k, v = (heads_of(_linear_last(g, x, dim, dim)) for _ in range(3))
        scores = g.node("Div", [g.node("MatMul", [q, g.node("Transpose", [k], perm=[0, 1, 3, 2])]), g.const(np.float32(np.sqrt(head_dim)), "root")])
        out = g.node("MatMul", [g.node("Softmax", [g.node("Add", [scores, mask])], axis=-1), v])
        out = g.node("Reshape", [g.node("Transpose", [out], perm=[0, 2, 1, 3]), g.const(np.array([1, tokens, dim]), "shape", np.int64)])
        x = _layer_norm_last(g, g.node("Add", [x, _linear_last(g, out, dim, dim)]), dim, 1e-12)
        x = _layer_norm_last(g, g.node("Add", [x, _linear_last(g, _gelu(g, _linear_last(g, x, dim, 4 * dim)), 4 * dim, dim)]), dim, 1e-12)
    return g.model(x)


ARCHITECTURES = {
    "resnet18": resnet18,
    "mobilenet_v2": mobilenet_v2,
    "resnext50": resnext50,
    "mobilenet_v3_large": mobilenet_v3_large,
    "efficientnet_b0": efficientnet_b0,
    "convnext_tiny": convnext_tiny,
    "unet": unet,
    "vit_tiny": vit_tiny,
    "bert_mini": bert_mini,
}
