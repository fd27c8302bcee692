"""Accuracy against speed for every lossy option, with and without calibration data, on real data.

    .venv/bin/python benchmarks/lossy_accuracy.py [--model M.onnx] [--options NAME,...] [--plot accuracy.png] [--runs N] [--smoke]

The model is examples/digits_cnn_dense_head.onnx (examples/train_digits_compressible.py: four
3×3 convs with BN, a hidden dense layer; 99.6% on the held-out scikit-learn digits). Each option
— ``--prune`` 0.7 and 0.9, ``--low-rank`` rank=0.5 and rank=0.25 (``--no-speed-gate``: every
layer factorised, an accuracy study), ``--binarize`` weights and weights+activations — is
compiled by slimtvm twice: without calibration data and with ``--calibration
examples/digits_calibration.npz`` (64 images of the training split: least-squares
reconstruction). Every artifact classifies the 450 held-out digits (slimtvm's outputs; the
saved ONNX model's predictions from onnxruntime must agree). Printed per build: held-out accuracy,
the multiply-accumulates of its conv/dense layers with a nonzero weight against the float model's
(from the saved model), and its latency (1 thread, one image, median after warm-up, numpy in and out) against
slimtvm's build of the float model, timed in turns in this process. ``--plot``: accuracy against
latency as a PNG (matplotlib). ``--model``: another digits model (e.g. examples/digits_cnn_4conv.onnx,
the same without the hidden dense layer); ``--options``: a subset by name (e.g. "binarize
weights+activations"). ``--smoke``: CI's check — two options, 40 test images, 5 runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np
import onnxruntime as ort

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
MODEL = os.path.join(REPO, "examples", "digits_cnn_dense_head.onnx")
CALIBRATION = os.path.join(REPO, "examples", "digits_calibration.npz")
TEST = os.path.join(REPO, "examples", "digits_test.npz")

OPTIONS = (
    ("prune 0.7", ["--prune", "0.7"]),
    ("prune 0.9", ["--prune", "0.9"]),
    ("low-rank rank=0.5", ["--low-rank", "rank=0.5", "--no-speed-gate"]),
    ("low-rank rank=0.25", ["--low-rank", "rank=0.25", "--no-speed-gate"]),
    ("binarize weights", ["--binarize", "weights"]),
    ("binarize weights+activations", ["--binarize", "weights+activations"]),
)


def _macs(path: str) -> int:
    from slimtvm.compress.matrix_layers import linear_macs
    from slimtvm.frontend.onnx_model import load_onnx, resolve_input_infos, with_static_inputs

    model = load_onnx(path)
    return linear_macs(with_static_inputs(model, resolve_input_infos(model)), nonzero=True)


def _accuracy(library: str, saved: str, images: np.ndarray, labels: np.ndarray) -> float:
    """Held-out accuracy of the artifact; refuses (SystemExit) predictions that differ from
    onnxruntime's on the model the artifact was compiled from."""
    import slimtvm

    model = slimtvm.load(library)
    session = ort.InferenceSession(saved, providers=["CPUExecutionProvider"])
    ours = np.array([model.run({"image": image[None]})["logits"].argmax() for image in images])
    theirs = np.array([session.run(None, {"image": image[None]})[0].argmax() for image in images])
    if (ours != theirs).any():
        sys.exit(f"{library}: {(ours != theirs).sum()} predictions differ from onnxruntime on {saved}")
    return float((ours == labels).mean())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=MODEL, help="the float digits model (default examples/digits_cnn_dense_head.onnx)")
    parser.add_argument("--options", default=None, help="comma-separated option names to run (default: all)")
    parser.add_argument("--plot", metavar="PNG", help="write accuracy against latency to this PNG (needs matplotlib)")
    parser.add_argument("--runs", type=int, default=200, help="timed runs per build (default 200)")
    parser.add_argument("--smoke", action="store_true", help="CI check: two options, 40 test images, 5 runs")
    args = parser.parse_args(argv)

    from slimtvm.cli import main as slimtvm_main
    from slimtvm.runtime.artifact import load, set_num_threads
    from slimtvm.runtime.bench import time_in_turns

    test = np.load(TEST)
    images, labels = test["images"], test["labels"]
    options, runs = OPTIONS, args.runs
    if args.options:
        wanted = [name.strip() for name in args.options.split(",")]
        options = [option for option in OPTIONS if option[0] in wanted]
    if args.smoke:
        images, labels, options, runs = images[:40], labels[:40], OPTIONS[:1] + OPTIONS[2:3], 5
    folder = tempfile.mkdtemp(prefix="slimtvm-lossy-")
    builds = [("float model", args.model, os.path.join(folder, "float.so"), [])]
    for name, flags in options:
        for calibrated in (False, True):
            tag = f"{len(builds)}"
            extra = ["--calibration", CALIBRATION] if calibrated else []
            builds.append(
                (f"{name}{' + calibration' if calibrated else ''}", os.path.join(folder, f"{tag}.onnx"), os.path.join(folder, f"{tag}.so"), flags + extra)
            )
    for _, saved, library, flags in builds:
        argv = ["compile", args.model, "-o", library, *flags] + (["--save-onnx", saved] if flags else [])
        with open(os.devnull, "w") as quiet:
            stdout, sys.stdout = sys.stdout, quiet
            try:
                status = slimtvm_main(argv)
            finally:
                sys.stdout = stdout
        if status != 0:
            sys.exit(f"slimtvm {' '.join(argv)} failed ({status})")

    set_num_threads(1)
    models = [load(library) for _, _, library, _ in builds]
    inputs = [m.check_inputs({"image": images[:1]}) for m in models]
    for m, x in zip(models, inputs):
        m.run({"image": x[0]})
    times, _ = time_in_turns([lambda m=m, x=x: m.run({"image": x[0]}) for m, x in zip(models, inputs)], runs=runs, block=10, warmup=2)
    float_macs, float_ms = _macs(args.model), times[0]
    from cpu_limits import cpu_name

    print(f"{os.path.basename(args.model)}, {len(labels)} held-out images, 1 thread, {runs} runs; CPU: {cpu_name()}")
    print(f"{'build':46s} {'accuracy':>9s} {'MACs':>10s} {'of float':>9s} {'latency':>10s} {'speed-up':>9s}")
    rows = []
    for (name, saved, library, _), ms in zip(builds, times):
        accuracy = _accuracy(library, saved, images, labels)
        macs = _macs(saved)
        rows.append((name, accuracy, ms))
        print(f"{name:46s} {100 * accuracy:8.2f}% {macs / 1e6:9.2f}M {macs / float_macs:8.0%} {1000 * ms:8.1f} µs {float_ms / ms:8.2f}×")
    if args.plot:
        _plot(rows, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _plot(rows: list, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7.5, 4.5))
    families = list(dict.fromkeys(name.replace(" + calibration", "") for name, _, _ in rows))
    for name, accuracy, ms in rows:
        calibrated = name.endswith("+ calibration")
        marker = "*" if name == "float model" else ("o" if calibrated else "x")
        color = f"C{families.index(name.replace(' + calibration', ''))}"
        axes.scatter(1000 * ms, 100 * accuracy, marker=marker, s=60, color=color)
        axes.annotate(name.replace(" + calibration", " (cal.)"), (1000 * ms, 100 * accuracy), fontsize=7, xytext=(4, 2), textcoords="offset points")
    axes.set_xlabel("latency per image, µs (slimtvm, 1 thread)")
    axes.set_ylabel("held-out accuracy, %")
    axes.set_title("digits CNN: lossy options without (x) and with (o) 64 calibration images")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    sys.exit(main())
