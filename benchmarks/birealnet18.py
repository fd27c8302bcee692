"""Bi-Real Net 18 (Liu et al., 2018) in PyTorch training-style code, exported to ONNX with random weights.

The structure of the authors' ``birealnet18``: a float 7×7/2 stem with batch norm and max-pool;
four stages of four blocks, each ``BN(binary 3×3 conv(Sign(x))) + shortcut`` (the shortcut of a
stage's first block is AvgPool 2×2 → float 1×1 conv → BN); global average pool; a float
classifier. Binary layers are examples/binary_torch.py's (Sign with a straight-through
estimator, weights α_c · sign(W) computed in the graph). Batch norms get random statistics so
the network is not degenerate. Needs torch (not a slimtvm dependency).
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "examples"))


def build(seed: int = 0):
    """The Bi-Real Net 18 module in eval mode (random weights, random BN statistics)."""
    import torch
    from binary_torch import BinaryConv
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv = BinaryConv(cin, cout, 3, stride=stride, padding=1, bias=False)
            self.bn = nn.BatchNorm2d(cout)
            self.shortcut = None
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            residual = x if self.shortcut is None else self.shortcut(x)
            return self.bn(self.conv(x)) + residual

    class BiRealNet18(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(64), nn.MaxPool2d(3, 2, 1))
            blocks, channels = [], 64
            for stage, width in enumerate((64, 128, 256, 512)):
                for index in range(4):
                    blocks.append(Block(channels, width, 2 if stage > 0 and index == 0 else 1))
                    channels = width
            self.blocks = nn.Sequential(*blocks)
            self.classifier = nn.Linear(512, 1000)

        def forward(self, x):
            x = self.blocks(self.stem(x))
            return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

    torch.manual_seed(seed)
    model = BiRealNet18()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


def export(path: str, seed: int = 0) -> str:
    """Write Bi-Real Net 18 as ONNX (input ``input`` [1, 3, 224, 224], output ``logits``) to ``path``."""
    import torch

    model = build(seed)
    torch.onnx.export(model, torch.randn(1, 3, 224, 224), path, input_names=["input"], output_names=["logits"], opset_version=17, dynamo=False)
    return path


if __name__ == "__main__":
    print(export(sys.argv[1] if len(sys.argv) > 1 else "birealnet18.onnx"))
