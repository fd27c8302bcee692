"""Train the float CNNs the lossy options are judged on: four convs with BN (and a hidden dense layer).

    pip install torch==2.13.0 scikit-learn onnx
    python examples/train_digits_compressible.py   # writes examples/digits_cnn_dense_head.onnx, digits_cnn_4conv.onnx, digits_calibration.npz

Not part of slimtvm's install. The network (upsampled 32×32 digits, the same split as
train_digits_cnn.py) is Conv 1→16 → Conv 16→32 → pool → Conv 32→64 → pool → Conv 64→64, each
followed by BN and ReLU, global average pool, a hidden Linear 64→128 with BN and ReLU, Linear
128→10. Nearly all of its conv multiply-accumulates are in 3×3 convs with 16+ input channels, the
material of ``--low-rank`` and ``--prune``. ``digits_cnn_4conv.onnx`` is the same without the
hidden dense layer (GAP → Linear 64→10): Conv → BN → ReLU (→ MaxPool) blocks only, the network
``--binarize weights+activations`` turns into XNOR-Net blocks. ``digits_calibration.npz`` holds 64 images of the
*training* split: the calibration data of ``--calibration`` (the held-out images stay for testing).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn
from train_digits_cnn import export_onnx, load_data, train

HERE = os.path.dirname(os.path.abspath(__file__))
EPOCHS = 40
CALIBRATION_IMAGES = 64


def conv_bn_relu(cin: int, cout: int) -> list:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class DigitsDenseHeadCNN(nn.Module):
    def __init__(self, hidden: bool = True):
        super().__init__()
        self.features = nn.Sequential(
            *conv_bn_relu(1, 16),
            *conv_bn_relu(16, 32),
            nn.MaxPool2d(2),
            *conv_bn_relu(32, 64),
            nn.MaxPool2d(2),
            *conv_bn_relu(64, 64),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.hidden = nn.Sequential(nn.Linear(64, 128, bias=False), nn.BatchNorm1d(128), nn.ReLU()) if hidden else nn.Identity()
        self.classifier = nn.Linear(128 if hidden else 64, 10)

    def forward(self, x):
        return self.classifier(self.hidden(self.features(x)))


def main():
    torch.manual_seed(0)
    split = load_data()
    x_train, x_test, y_train, y_test = split
    for hidden, name in ((True, "digits_cnn_dense_head.onnx"), (False, "digits_cnn_4conv.onnx")):
        torch.manual_seed(0)
        model = DigitsDenseHeadCNN(hidden)
        accuracy = train(model, split, torch.optim.Adam(model.parameters(), lr=2e-3, weight_decay=1e-4), EPOCHS, log_every=10)
        path = os.path.join(HERE, name)
        export_onnx(model, x_test[:1], path)
        print(f"wrote {path}; test accuracy {accuracy:.4f}")
    chosen = np.random.default_rng(0).choice(len(x_train), size=CALIBRATION_IMAGES, replace=False)
    np.savez_compressed(os.path.join(HERE, "digits_calibration.npz"), image=x_train[chosen])
    print(f"wrote digits_calibration.npz ({CALIBRATION_IMAGES} training images)")


if __name__ == "__main__":
    main()
