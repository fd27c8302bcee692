"""Export YOLOv5s and YOLOv8n to ONNX as a user of ultralytics would, for the detector benchmark.

    bash scripts/setup_detector_venv.sh          # once: .venv-detectors with torch + ultralytics
    .venv-detectors/bin/python scripts/export_yolo.py --out DIR [--sizes 320,640] [--slim 0.5]

Each network is built from ultralytics' own yaml file (``yolov5s.yaml`` — the ultralytics
package's YOLOv5, with the anchor-free head — and ``yolov8n.yaml``) with seeded random weights
and random batch-norm statistics (PyTorch's defaults make every BN the identity, which would
hide a wrong fold), put in eval mode with the Detect head in export mode, and exported with
``torch.onnx.export`` (the TorchScript exporter, opset 17, as ultralytics' own ONNX export
does), with no simplification: the shape arithmetic of the head stays in the graph.

``--slim F`` also writes the network-slimmed YOLOv5s: the fraction F of channels with the
smallest |γ|, ranked together over the BN after the first conv of every bottleneck, get γ = 0
(and their BN shift kept, so the channel is a constant, as network slimming leaves it before
the channels are cut).

Writes ``yolov5s-320.onnx``, ``yolov8n-320.onnx``, … and ``yolov5s-slim50-320.onnx`` into DIR.
"""

from __future__ import annotations

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from random_batch_norms import randomise_batch_norms  # noqa: E402

MODELS = {"yolov5s": "yolov5s.yaml", "yolov8n": "yolov8n.yaml"}


def build(yaml_name: str, seed: int):
    """An ultralytics DetectionModel from ``yaml_name``, seeded random weights and BN
    statistics, eval mode, Detect head in ONNX export mode."""
    import torch
    from ultralytics.nn.modules import Detect
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(seed)
    model = DetectionModel(yaml_name, ch=3, nc=80, verbose=False)
    randomise_batch_norms(model, seed)
    model.eval()
    for module in model.modules():
        if isinstance(module, Detect):
            module.export = True
            module.format = "onnx"
    return model


def slim(model, fraction: float) -> int:
    """Network slimming's pruning step: γ = 0 for the ``fraction`` of channels with the
    smallest |γ| over the BN after the first conv of every bottleneck. Returns how many."""
    import torch
    from ultralytics.nn.modules.block import Bottleneck

    norms = [module.cv1.bn for module in model.modules() if isinstance(module, Bottleneck)]
    gammas = torch.cat([bn.weight.detach().abs() for bn in norms])
    count = int(fraction * gammas.numel())
    threshold = gammas.sort().values[count - 1] if count else -1.0
    zeroed = 0
    with torch.no_grad():
        for bn in norms:
            mask = bn.weight.abs() <= threshold
            bn.weight[mask] = 0.0
            zeroed += int(mask.sum())
    return zeroed


def export(model, size: int, path: str) -> None:
    import torch

    image = torch.randn(1, 3, size, size)
    with torch.no_grad():
        model(image)  # builds the head's anchors and strides for this size
        torch.onnx.export(model, image, path, opset_version=17, input_names=["images"], output_names=["output0"], do_constant_folding=True, dynamo=False)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--sizes", default="320")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--slim", type=float, default=0.5, help="fraction of bottleneck channels slimmed in YOLOv5s (0: no slimmed model)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    for size in (int(s) for s in args.sizes.split(",")):
        for name in args.models.split(","):
            model = build(MODELS[name], args.seed)
            path = os.path.join(args.out, f"{name}-{size}.onnx")
            export(model, size, path)
            print(f"wrote {path}")
            if name == "yolov5s" and args.slim > 0:
                zeroed = slim(model, args.slim)
                path = os.path.join(args.out, f"{name}-slim{round(args.slim * 100)}-{size}.onnx")
                export(model, size, path)
                print(f"wrote {path} ({zeroed} bottleneck channels with γ = 0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
