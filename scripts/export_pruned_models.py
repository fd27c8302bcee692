"""Export ResNet-18 and MobileNetV2 pruned with PyTorch's own API (torch.nn.utils.prune) to ONNX.

    .venv/bin/pip install -e '.[torch]'                             # torch (once)
    .venv/bin/python scripts/export_pruned_models.py OUT_DIR [--tiny] [--seed 0] [--only NAME,...]

Writes, with random weights and randomised batch-norm statistics (seeded), in eval mode:

- ``resnet18_dense.onnx``: the unpruned network (the reference for dense builds);
- ``resnet18_global90.onnx``: ``prune.global_unstructured(L1Unstructured, amount=0.9)`` over
  every conv and the classifier, then ``prune.remove``;
- ``resnet18_layer90.onnx``: ``prune.l1_unstructured(amount=0.9)`` per conv, the stem left dense;
- ``resnet18_layer80_masks.onnx``: per conv 80%, exported *without* ``prune.remove`` and without
  the exporter's constant folding: the graph computes ``weight_orig · weight_mask``;
- ``resnet18_filters50.onnx``: ``prune.ln_structured(n=1, dim=0, amount=0.5)`` on the first conv
  of every block (half its filters zero; their BN turns them into constant channels);
- ``mobilenet_v2_global90.onnx``: global L1 90% over the 1×1 convs (the stem, the depthwise convs
  and the classifier dense, as Elsen et al. and XNNPACK prune MobileNets; pruned with the rest,
  torchvision's initialisation gives the depthwise filters and the classifier the smallest
  weights, global pruning zeroes nearly all of them and the network's output is a constant).

``--tiny`` builds the same networks at width 1/16 (ResNet: 8-8-16-32 channels) and 0.25
(MobileNetV2, 64 final features) on 32×32 inputs: the test suite's fixtures (tests/data/pruned_*.onnx). Prints each file with its share
of zero weights. Opset 17, TorchScript exporter (``dynamo=False``).
"""

from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

MODELS = ("resnet18_dense", "resnet18_global90", "resnet18_layer90", "resnet18_layer80_masks", "resnet18_filters50", "mobilenet_v2_global90")


def _convs(model):
    from torch import nn

    return [module for module in model.modules() if isinstance(module, nn.Conv2d)]


def _linears(model):
    from torch import nn

    return [module for module in model.modules() if isinstance(module, nn.Linear)]


def build(name: str, tiny: bool, seed: int):
    """The network ``name`` (see the module doc), pruned, in eval mode."""
    import torch
    from random_batch_norms import randomise_batch_norms
    from torch.nn.utils import prune
    from torch_architectures import MobileNetV2, ResNet18

    torch.manual_seed(seed)
    if name.startswith("resnet18"):
        model = ResNet18(width=0.0625 if tiny else 1.0, classes=10 if tiny else 1000)
    else:
        model = MobileNetV2(width=0.25 if tiny else 1.0, classes=10 if tiny else 1000, last=64 if tiny else None)
    randomise_batch_norms(model, seed)
    convs, linears = _convs(model), _linears(model)
    if name.startswith("mobilenet"):
        # as Elsen et al. (Fast Sparse ConvNets) and XNNPACK prune MobileNets: the 1×1 convs; the
        # stem, the depthwise convs and the classifier stay dense
        convs, linears = [m for m in convs if m.kernel_size == (1, 1)], []
    if name.endswith("global90"):
        prune.global_unstructured([(m, "weight") for m in convs + linears], pruning_method=prune.L1Unstructured, amount=0.9)
    elif name.endswith("layer90") or name.endswith("layer80_masks"):
        amount = 0.9 if name.endswith("layer90") else 0.8
        for conv in convs[1:]:  # the stem stays dense
            prune.l1_unstructured(conv, "weight", amount=amount)
    elif name.endswith("filters50"):
        from torch_architectures import BasicBlock

        for block in (m for m in model.modules() if isinstance(m, BasicBlock)):
            prune.ln_structured(block.conv1, "weight", amount=0.5, n=1, dim=0)
    if not name.endswith("_masks"):
        for module in convs + linears:
            if prune.is_pruned(module) and hasattr(module, "weight_orig"):
                prune.remove(module, "weight")
    return model.eval()


def zero_share(model) -> float:
    """The share of zero weights over every conv and linear layer (masks applied; all layers,
    pruned or not)."""
    zeros = total = 0
    for module in _convs(model) + _linears(model):
        weight = module.weight.detach()
        zeros += int((weight == 0).sum())
        total += weight.numel()
    return zeros / total


def export(model, path: str, side: int, fold_constants: bool = True) -> None:
    """TorchScript export at opset 17; ``fold_constants=False`` keeps computed weights (the
    ``weight_orig · weight_mask`` of an unremoved prune) as graph nodes."""
    import torch

    with torch.no_grad():
        torch.onnx.export(
            model,
            (torch.randn(1, 3, side, side),),
            path,
            input_names=["image"],
            output_names=["logits"],
            opset_version=17,
            dynamo=False,
            do_constant_folding=fold_constants,
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_dir")
    parser.add_argument("--tiny", action="store_true", help="small widths on 32×32 inputs (the test fixtures)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", help="comma-separated subset of " + ", ".join(MODELS))
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else MODELS
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(MODELS)}")
    os.makedirs(args.output_dir, exist_ok=True)
    for name in names:
        model = build(name, args.tiny, args.seed)
        path = os.path.join(args.output_dir, (f"pruned_{name}_tiny" if args.tiny else name) + ".onnx")
        export(model, path, 32 if args.tiny else 224, fold_constants=not name.endswith("_masks"))
        print(f"{path}: {100 * zero_share(model):.1f}% of conv/linear weights zero")
    return 0


if __name__ == "__main__":
    sys.exit(main())
