"""Export torchvision's architectures (random weights) with torch's TorchScript exporter, compile
each with slimtvm, compare it with onnxruntime and time both at one thread (session 37's sweep).

    python3 -m venv /tmp/tv-venv && /tmp/tv-venv/bin/pip install torch torchvision pillow onnx onnxruntime numpy
    PYTHONPATH=src:.venv/lib/python3.11/site-packages /tmp/tv-venv/bin/python scripts/sweep_torchvision.py OUT_DIR [--only NAME,...]

For each architecture of :data:`ARCHITECTURES` (the smallest variant of each torchvision family,
its default input size, ``torch.manual_seed(0)`` weights — zero-initialised matrices redrawn —, eval mode), writes ``OUT_DIR/NAME.onnx``
(opset 17, the exporter most users still get from ``torch.onnx.export(..., dynamo=False)``),
compiles it for this machine and prints one line: ``OK`` with the largest relative difference to
onnxruntime on the same input, the compile time, slimtvm's and onnxruntime's median time at one
thread (``--runs`` each, the engines in turns: ``slimtvm.runtime.bench.time_side_by_side``) and their ratio, and any layer left on TVM's generic schedule; ``MISMATCH``
above 1e-4; ``EXPORTFAIL`` (torch could not export it: not slimtvm's) or ``COMPILEFAIL`` with the
first line of the error.

torchvision's wheels on PyPI are built against the CUDA build of torch, whose compiled operators
(``torchvision::nms`` and the like) do not load beside the CPU build: :func:`_import_torchvision`
skips registering their meta kernels, which only the detection models' ops need (not swept).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import types
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

# name: (input shape, torchvision builder name, module: "" for torchvision.models, or a submodule)
ARCHITECTURES = {
    "alexnet": ((1, 3, 224, 224), "alexnet", ""),
    "vgg11_bn": ((1, 3, 224, 224), "vgg11_bn", ""),
    "resnet18": ((1, 3, 224, 224), "resnet18", ""),
    "resnet50": ((1, 3, 224, 224), "resnet50", ""),
    "resnext50_32x4d": ((1, 3, 224, 224), "resnext50_32x4d", ""),
    "wide_resnet50_2": ((1, 3, 224, 224), "wide_resnet50_2", ""),
    "densenet121": ((1, 3, 224, 224), "densenet121", ""),
    "googlenet": ((1, 3, 224, 224), "googlenet", ""),
    "inception_v3": ((1, 3, 299, 299), "inception_v3", ""),
    "squeezenet1_0": ((1, 3, 224, 224), "squeezenet1_0", ""),
    "squeezenet1_1": ((1, 3, 224, 224), "squeezenet1_1", ""),
    "shufflenet_v2_x1_0": ((1, 3, 224, 224), "shufflenet_v2_x1_0", ""),
    "mobilenet_v2": ((1, 3, 224, 224), "mobilenet_v2", ""),
    "mobilenet_v3_small": ((1, 3, 224, 224), "mobilenet_v3_small", ""),
    "mobilenet_v3_large": ((1, 3, 224, 224), "mobilenet_v3_large", ""),
    "mnasnet0_5": ((1, 3, 224, 224), "mnasnet0_5", ""),
    "mnasnet1_0": ((1, 3, 224, 224), "mnasnet1_0", ""),
    "efficientnet_b0": ((1, 3, 224, 224), "efficientnet_b0", ""),
    "efficientnet_v2_s": ((1, 3, 384, 384), "efficientnet_v2_s", ""),
    "regnet_x_400mf": ((1, 3, 224, 224), "regnet_x_400mf", ""),
    "regnet_y_400mf": ((1, 3, 224, 224), "regnet_y_400mf", ""),
    "convnext_tiny": ((1, 3, 224, 224), "convnext_tiny", ""),
    "swin_t": ((1, 3, 224, 224), "swin_t", ""),
    "swin_v2_t": ((1, 3, 256, 256), "swin_v2_t", ""),
    "maxvit_t": ((1, 3, 224, 224), "maxvit_t", ""),
    "vit_b_32": ((1, 3, 224, 224), "vit_b_32", ""),
    "lraspp_mobilenet_v3_large": ((1, 3, 224, 224), "lraspp_mobilenet_v3_large", "segmentation"),
    "deeplabv3_mobilenet_v3_large": ((1, 3, 224, 224), "deeplabv3_mobilenet_v3_large", "segmentation"),
    "fcn_resnet50": ((1, 3, 224, 224), "fcn_resnet50", "segmentation"),
    "r3d_18": ((1, 3, 8, 112, 112), "r3d_18", "video"),
    "r2plus1d_18": ((1, 3, 8, 112, 112), "r2plus1d_18", "video"),
}


def _import_torchvision():
    """torchvision without its compiled operators' meta registrations (module docstring)."""
    sys.modules.setdefault("torchvision._meta_registrations", types.ModuleType("torchvision._meta_registrations"))
    import torchvision

    return torchvision


class _FirstOutput:
    """Segmentation models return ``{"out": ..., "aux": ...}``; the export keeps ``out``."""

    def __new__(cls, model):
        import torch

        class Wrapped(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, x):
                result = self.model(x)
                return result["out"] if isinstance(result, dict) else result

        return Wrapped()


def export(name: str, out_dir: str) -> str:
    """Write ``out_dir/name.onnx`` (module docstring) and return its path."""
    import torch

    torchvision = _import_torchvision()
    shape, builder, submodule = ARCHITECTURES[name]
    module = getattr(torchvision.models, submodule) if submodule else torchvision.models
    torch.manual_seed(0)
    kwargs = {"weights": None}
    if name in ("googlenet", "inception_v3"):
        # torch's default initialisation: GoogLeNet's own (truncated normal, std 0.01) leaves
        # logits so small and alike that a comparison with onnxruntime would say little
        kwargs["aux_logits"] = False
        kwargs["init_weights"] = False
    if submodule == "segmentation":
        kwargs["weights_backbone"] = None
    model = _FirstOutput(getattr(module, builder)(**kwargs)).eval()
    with torch.no_grad():  # zero-initialised matrices (ViT's head) would make every logit 0
        for parameter in model.parameters():
            if parameter.dim() >= 2 and not parameter.any():
                parameter.normal_(0.0, 0.02)
    path = os.path.join(out_dir, f"{name}.onnx")
    # nn.MultiheadAttention's inference fast path is one aten op the TorchScript exporter lacks
    torch.backends.mha.set_fastpath_enabled(False)
    with torch.no_grad():
        torch.onnx.export(model, (torch.randn(*shape),), path, input_names=["input"], output_names=["output"], opset_version=17, dynamo=False)
    return path


def check(path: str, out_dir: str, runs: int) -> str:
    """Compile ``path`` with slimtvm, compare it with onnxruntime and time both; one status line."""
    import numpy as np
    import onnx
    import onnxruntime as ort
    from conftest import relative_difference

    import slimtvm
    from slimtvm.runtime.artifact import set_num_threads
    from slimtvm.runtime.bench import time_side_by_side

    name = os.path.basename(path)[: -len(".onnx")]
    model = onnx.load(path)
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    data = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    start = time.perf_counter()
    try:
        artifact = slimtvm.compile(model, os.path.join(out_dir, f"{name}.so"))
    except Exception as err:  # noqa: BLE001 - the sweep reports every failure and goes on
        return f"COMPILEFAIL {name}: {type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"
    seconds = time.perf_counter() - start
    set_num_threads(1)
    loaded = artifact.load()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    ours = loaded.run({"input": data})["output"]
    reference = session.run(None, {"input": data})[0]
    worst = relative_difference(ours, reference)
    ours_ms, theirs_ms, _ = time_side_by_side(lambda: loaded.run({"input": data}), lambda: session.run(None, {"input": data}), runs)
    fallbacks = next(p for p in artifact.manifest["passes"] if p["name"] == "kernels")["generic_fallbacks"]
    status = "OK" if worst <= 1e-4 else "MISMATCH"
    return (
        f"{status} {name}: relative difference {worst:.1e}, compile {seconds:.0f} s, 1 thread slimtvm {ours_ms:.2f} ms, "
        f"onnxruntime {theirs_ms:.2f} ms ({ours_ms / theirs_ms:.2f}x), generic fallbacks {len(fallbacks)} {fallbacks[:4]}"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--only", default=None, help="comma-separated architecture names")
    parser.add_argument("--runs", type=int, default=10, help="timed runs per engine (median)")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    os.makedirs(args.out_dir, exist_ok=True)
    for name in args.only.split(",") if args.only else list(ARCHITECTURES):
        try:
            path = export(name, args.out_dir)
        except Exception as err:  # noqa: BLE001 - torch's failure on a model, not slimtvm's
            print(f"EXPORTFAIL {name}: {type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}", flush=True)
            continue
        print(check(path, args.out_dir, args.runs), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
