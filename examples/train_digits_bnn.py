"""Train a small binarized network (BNN) on scikit-learn's digits and export it to ONNX.

    pip install torch==2.13.0 scikit-learn onnx
    python examples/train_digits_bnn.py   # writes examples/digits_bnn.onnx (uses digits_test.npz's split)

XNOR-Net / BinaryConnect style, as a user would write it in PyTorch: a float stem, then blocks of
BatchNorm → Sign → binary conv (weights α_c · sign(W) per output channel) → max-pool, a binary
dense layer, and a float classifier. Sign uses a straight-through estimator for training; the
ONNX export has real ``Sign`` nodes on the activations, and the weights are binarized *in the
graph* (Abs → ReduceMean → Sign → Mul on the float weights), which slimtvm must fold away and
recognise. One block has a residual shortcut around its binary conv (Bi-Real style).

Not part of slimtvm's install: the committed ``digits_bnn.onnx`` is what tests and examples use.
"""

from __future__ import annotations

import os

import torch
from binary_torch import BinaryConv, BinaryLinear
from torch import nn
from train_digits_cnn import export_onnx, load_data, train

HERE = os.path.dirname(os.path.abspath(__file__))
EPOCHS = 60


class DigitsBNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 32, 3, padding=1, bias=False)  # first layer stays float
        self.bn1 = nn.BatchNorm2d(32)
        self.conv1 = BinaryConv(32, 64, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(64)
        self.conv2 = BinaryConv(64, 64, 3, padding=1, bias=False)  # residual shortcut around it
        self.bn3 = nn.BatchNorm2d(64)
        self.conv3 = BinaryConv(64, 128, 3, stride=2, padding=1, bias=False)
        self.bn4 = nn.BatchNorm1d(128 * 4 * 4)
        self.fc1 = BinaryLinear(128 * 4 * 4, 128, bias=False)
        self.bn5 = nn.BatchNorm1d(128)
        self.fc2 = nn.Linear(128, 10)  # classifier stays float

    def forward(self, x):
        x = self.bn1(self.stem(x))  # BN → Sign (inside conv1) → binary conv → pool
        x = nn.functional.max_pool2d(self.conv1(x), 2)  # 16×16
        x = self.bn2(x)
        x = x + self.conv2(x)  # Bi-Real shortcut
        x = nn.functional.max_pool2d(self.conv3(self.bn3(x)), 2)  # 8×8 → 4×4
        x = self.fc1(self.bn4(torch.flatten(x, 1)))
        return self.fc2(torch.relu(self.bn5(x)))


def main():
    torch.manual_seed(0)
    split = load_data()
    x_test = split[1]
    model = DigitsBNN()
    accuracy = train(model, split, torch.optim.Adam(model.parameters(), lr=3e-3), EPOCHS, log_every=10)
    path = os.path.join(HERE, "digits_bnn.onnx")
    export_onnx(model, x_test[:1], path, do_constant_folding=False)  # keep the in-graph weight binarization, as exporters often do
    print(f"wrote {path}; test accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
