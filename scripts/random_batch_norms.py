"""Randomised batch-norm statistics for the PyTorch export scripts (export_brevitas_bnn.py,
export_reactnet_block.py): with PyTorch's defaults every BN is the identity, and a wrong fold
would go unseen."""

from __future__ import annotations


def randomise_batch_norms(model, seed: int) -> None:
    """Seeded random running mean, variance (0.1..2), scale (±0.5..1.5) and shift for every BatchNorm1d/2d."""
    import torch
    from torch import nn

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
                count = module.num_features
                module.running_mean.copy_(torch.randn(count, generator=generator) * 0.5)
                module.running_var.copy_(torch.rand(count, generator=generator) * 1.9 + 0.1)
                module.weight.copy_((torch.rand(count, generator=generator) + 0.5) * torch.sign(torch.randn(count, generator=generator)))
                module.bias.copy_(torch.randn(count, generator=generator) * 0.5)
