"""Train the bundled example: a small residual CNN on scikit-learn's digits, exported to ONNX.

    pip install torch==2.13.0 scikit-learn onnx
    python examples/train_digits_cnn.py   # writes examples/digits_cnn.onnx, digits_test.npz, digit_sample.npz

Not part of slimtvm's install: the committed ``digits_cnn.onnx`` is what the README's main
command compiles. The network uses batch norm in the positions slimtvm folds — Conv→BN,
BN→Conv (pre-normalised input, padded conv), a pre-activation BN→ReLU (not foldable: decomposed),
BN→Gemm — upsampled 8×8 digits to 32×32 so the convolutions do some real work.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
SIZE = 32
EPOCHS = 40


class DigitsCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.input_norm = nn.BatchNorm2d(1)  # BN → padded Conv: folded with a border correction
        self.stem = nn.Conv2d(1, 16, 3, padding=1)
        self.stem_bn = nn.BatchNorm2d(16)  # Conv → BN
        self.block_conv1 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.block_bn1 = nn.BatchNorm2d(16)
        self.block_conv2 = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.block_bn2 = nn.BatchNorm2d(16)
        self.down = nn.Conv2d(16, 32, 3, stride=2, padding=1, bias=False)
        self.down_bn = nn.BatchNorm2d(32)
        self.pre_act_bn = nn.BatchNorm2d(32)  # BN → ReLU: not foldable, decomposed
        self.dw = nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False)  # depthwise
        self.dw_bn = nn.BatchNorm2d(32)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head_bn = nn.BatchNorm1d(32)  # BN → Gemm
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = torch.relu(self.stem_bn(self.stem(self.input_norm(x))))
        y = torch.relu(self.block_bn1(self.block_conv1(x)))
        x = torch.relu(x + self.block_bn2(self.block_conv2(y)))
        x = torch.relu(self.down_bn(self.down(x)))
        x = torch.relu(self.dw_bn(self.dw(torch.relu(self.pre_act_bn(x)))))
        x = torch.flatten(self.pool(x), 1)
        return self.fc(self.head_bn(x))


def load_data():
    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    images = torch.nn.functional.interpolate(torch.from_numpy(images)[:, None], size=(SIZE, SIZE), mode="bilinear", align_corners=False)
    return train_test_split(images.numpy(), digits.target, test_size=0.25, random_state=0, stratify=digits.target)


def train(model, split, optimizer, epochs: int, log_every: int = 1) -> float:
    """Adam-style training with a cosine schedule, batch 64; returns the final test accuracy."""
    x_train, x_test, y_train, y_test = split
    data = torch.utils.data.TensorDataset(torch.from_numpy(x_train), torch.from_numpy(y_train))
    loader = torch.utils.data.DataLoader(data, batch_size=64, shuffle=True)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    for epoch in range(epochs):
        model.train()
        for images, labels in loader:
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(images), labels)
            loss.backward()
            optimizer.step()
        schedule.step()
        model.eval()
        with torch.no_grad():
            accuracy = (model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean()
        if (epoch + 1) % log_every == 0:
            print(f"epoch {epoch + 1}: loss {loss.item():.3f}, test accuracy {accuracy:.3f}")
    model.eval()
    return accuracy


def export_onnx(model, sample, path: str, **options) -> None:
    """Export ``model`` as the examples are exported: input ``image``, output ``logits``, opset
    17, TorchScript exporter, PRESERVE (with the model in eval mode) so every BatchNormalization
    stays as written — the default export would fuse Conv→BN itself, leaving slimtvm's pass
    nothing to show. ``options`` go to ``torch.onnx.export``."""
    torch.onnx.export(
        model,
        torch.from_numpy(sample),
        path,
        input_names=["image"],
        output_names=["logits"],
        opset_version=17,
        dynamo=False,
        training=torch.onnx.TrainingMode.PRESERVE,
        **options,
    )


def main():
    torch.manual_seed(0)
    split = load_data()
    x_train, x_test, y_train, y_test = split
    model = DigitsCNN()
    accuracy = train(model, split, torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4), EPOCHS)
    path = os.path.join(HERE, "digits_cnn.onnx")
    export_onnx(model, x_test[:1], path)
    np.savez_compressed(os.path.join(HERE, "digits_test.npz"), images=x_test, labels=y_test)
    np.savez(os.path.join(HERE, "digit_sample.npz"), image=x_test[:1])  # for `slimtvm run --input`
    print(f"wrote {path} and digits_test.npz ({len(y_test)} test images); test accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
