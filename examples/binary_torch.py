"""Binarized layers as PyTorch training code writes them (XNOR-Net / BinaryConnect style).

``SignSTE`` is sign(x) with a straight-through gradient and exports as an ONNX ``Sign`` node;
``binary_weight`` is α_c · sign(W) with α_c = mean |W| per output channel, computed in the graph
(so an ONNX export carries Abs → ReduceMean → Sign → Mul, which slimtvm folds and recognises).
Used by examples/train_digits_bnn.py and benchmarks/birealnet18.py. Needs torch.
"""

from __future__ import annotations

import torch
from torch import nn


class SignSTE(torch.autograd.Function):
    """sign(x) forward; gradient passed where |x| ≤ 1 (straight-through estimator)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.sign(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype)

    @staticmethod
    def symbolic(g, x):
        return g.op("Sign", x)


def binary_weight(weight):
    """α_c · sign(W): α_c = mean |W| over each output channel (XNOR-Net)."""
    alpha = weight.abs().mean(dim=tuple(range(1, weight.dim())), keepdim=True)
    return alpha * SignSTE.apply(weight)


class BinaryConv(nn.Conv2d):
    def forward(self, x):
        return nn.functional.conv2d(SignSTE.apply(x), binary_weight(self.weight), None, self.stride, self.padding, self.dilation, self.groups)


class BinaryLinear(nn.Linear):
    def forward(self, x):
        return nn.functional.linear(SignSTE.apply(x), binary_weight(self.weight))
