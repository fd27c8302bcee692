"""Export a Brevitas BNN with ``export_qonnx`` (BipolarQuant nodes, the format FINN reads).

    .venv/bin/pip install -e '.[brevitas]'                    # torch, brevitas, qonnx (once)
    .venv/bin/python scripts/export_brevitas_bnn.py OUT.onnx [--tiny] [--seed 0]

The network is FINN's CNV layout for CIFAR-10 sized inputs (3×32×32): a float stem conv with BN,
then binary 3×3 convs (``QuantConv2d`` with ``SignedBinaryWeightPerTensorConst``, inputs through
``QuantIdentity`` with ``SignedBinaryActPerTensorConst``) 64-64 / pool / 128-128 / pool / 256-256,
each followed by BN, two binary fully connected layers of 512 and a float classifier. Random
weights, randomised BN statistics (seeded). ``--tiny``: the same layers with 8-16-32 channels on
16×16 inputs, the test suite's fixture (tests/data/brevitas_bnn_tiny.onnx). Prints the number of
binary layers (convs, dense) that ``slimtvm compile`` must report.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings


def build(tiny: bool, seed: int):
    import torch
    from brevitas.nn import QuantConv2d, QuantIdentity, QuantLinear
    from brevitas.quant import SignedBinaryActPerTensorConst, SignedBinaryWeightPerTensorConst
    from random_batch_norms import randomise_batch_norms
    from torch import nn

    torch.manual_seed(seed)
    widths = (8, 16, 32) if tiny else (64, 128, 256)
    hidden = 32 if tiny else 512

    def binary_act():
        return QuantIdentity(act_quant=SignedBinaryActPerTensorConst)

    def binary_conv(cin, cout):
        return [binary_act(), QuantConv2d(cin, cout, 3, padding=1, bias=False, weight_quant=SignedBinaryWeightPerTensorConst), nn.BatchNorm2d(cout)]

    layers = [nn.Conv2d(3, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0])]
    layers += binary_conv(widths[0], widths[0]) + [nn.MaxPool2d(2)]
    layers += binary_conv(widths[0], widths[1]) + binary_conv(widths[1], widths[1]) + [nn.MaxPool2d(2)]
    layers += binary_conv(widths[1], widths[2]) + binary_conv(widths[2], widths[2]) + [nn.MaxPool2d(2)]
    features = nn.Sequential(*layers)
    side = (16 if tiny else 32) // 8
    classifier = nn.Sequential(
        nn.Flatten(),
        binary_act(),
        QuantLinear(widths[2] * side * side, hidden, bias=False, weight_quant=SignedBinaryWeightPerTensorConst),
        nn.BatchNorm1d(hidden),
        binary_act(),
        QuantLinear(hidden, hidden, bias=False, weight_quant=SignedBinaryWeightPerTensorConst),
        nn.BatchNorm1d(hidden),
        nn.Linear(hidden, 10),
    )
    model = nn.Sequential(features, classifier).eval()
    randomise_batch_norms(model, seed + 1)
    binary = {"binary_convs": 5, "binary_dense": 2}
    return model, (1, 3, 16 if tiny else 32, 16 if tiny else 32), binary


def _as_one_file(path: str) -> None:
    """torch's exporter may write the weights beside the model (``PATH.data``): fold them in."""
    import os

    import onnx

    model = onnx.load(path)  # reads external data too
    onnx.save(model, path, save_as_external_data=False)
    if os.path.exists(path + ".data"):
        os.remove(path + ".data")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output")
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        import torch
        from brevitas.export import export_qonnx
    except ImportError:
        print("needs torch and brevitas: .venv/bin/pip install -e '.[brevitas]'", file=sys.stderr)
        return 2
    model, shape, binary = build(args.tiny, args.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qonnx(model, input_t=torch.randn(*shape), export_path=args.output)
    _as_one_file(args.output)
    print(json.dumps({"output": args.output, "input_shape": list(shape), **binary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
