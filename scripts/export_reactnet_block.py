"""Export ReActNet-style basic blocks from PyTorch (the test suite's fixture tests/data/reactnet_blocks.onnx).

    .venv/bin/pip install torch                        # once (or -e '.[brevitas]', which brings it)
    .venv/bin/python scripts/export_reactnet_block.py OUT.onnx [--seed 0]

ReActNet (Liu et al., 2020) binarizes with a learned per-channel threshold, RSign:
``sign(x + b_c)``, scales binary weights by their mean magnitude per output channel
(``sign(W)·mean|W|``, computed in the graph), and activates with RPReLU: ``PReLU(x − γ_c; β_c) + ζ_c``.
The network: a float stem conv with BN, two blocks ``RPReLU(BN(BinaryConv3×3(RSign(x))) + x)``, a
global average pool and a float classifier, random weights and randomised BN statistics, exported
with ``torch.onnx.export`` at opset 17. Prints the number of binary convs (2).
"""

from __future__ import annotations

import argparse
import json
import sys


def build(seed: int):
    import torch
    from random_batch_norms import randomise_batch_norms
    from torch import nn

    torch.manual_seed(seed)

    class RSign(nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.shift = nn.Parameter(torch.randn(1, channels, 1, 1) * 0.3)

        def forward(self, x):
            return torch.sign(x + self.shift)

    class RPReLU(nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.gamma = nn.Parameter(torch.randn(1, channels, 1, 1) * 0.3)
            self.prelu = nn.PReLU(channels, init=0.25)
            self.zeta = nn.Parameter(torch.randn(1, channels, 1, 1) * 0.3)

        def forward(self, x):
            return self.prelu(x - self.gamma) + self.zeta

    class BinaryConv(nn.Conv2d):
        def forward(self, x):
            scale = self.weight.abs().mean(dim=(1, 2, 3), keepdim=True)
            return nn.functional.conv2d(x, torch.sign(self.weight) * scale, None, self.stride, self.padding)

    class Block(nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.sign = RSign(channels)
            self.conv = BinaryConv(channels, channels, 3, padding=1, bias=False)
            self.norm = nn.BatchNorm2d(channels)
            self.act = RPReLU(channels)

        def forward(self, x):
            return self.act(self.norm(self.conv(self.sign(x))) + x)

    model = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), Block(32), Block(32), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10)
    ).eval()
    randomise_batch_norms(model, seed + 1)
    return model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("needs torch: .venv/bin/pip install torch", file=sys.stderr)
        return 2
    model = build(args.seed)
    torch.onnx.export(model, (torch.randn(1, 3, 16, 16),), args.output, input_names=["image"], output_names=["logits"], opset_version=17, dynamo=False)
    print(json.dumps({"output": args.output, "binary_convs": 2}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
