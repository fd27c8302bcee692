"""slimtvm against onnxruntime, side by side in one process, on the bundled and light-zoo models.

    .venv/bin/python benchmarks/compare_onnxruntime.py [--models digits_cnn,light_squeezenet,...]
                                                        [--threads 1,2] [--runs N]

For each model: compile with slimtvm for this machine (default schedules, no tuning), then for each
thread count time both engines in alternating rounds after warm-up (median) and print the ratio
slimtvm/onnxruntime (below 1: slimtvm is faster). The light-zoo models get seeded random weights
(their shipped weights are all 0.02); resnet18 and mobilenet_v2 are torchvision's architectures
written in ONNX with random weights (benchmarks/architectures.py). Ends with one line per measurement.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import onnx

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

import slimtvm  # noqa: E402
from slimtvm.compiler.bench import bench  # noqa: E402

DEFAULT_MODELS = "digits_cnn,resnet18,mobilenet_v2,light_squeezenet,light_resnet50"


def model_path(name: str, workdir: str) -> str:
    if name == "digits_cnn":
        return os.path.join(HERE, "..", "examples", "digits_cnn.onnx")
    from architectures import ARCHITECTURES

    if name in ARCHITECTURES:
        path = os.path.join(workdir, f"{name}.onnx")
        onnx.save(ARCHITECTURES[name](seed=0), path)
        return path
    from light_zoo import LIGHT, with_random_weights

    path = os.path.join(workdir, f"{name}.onnx")
    onnx.save(with_random_weights(onnx.load(os.path.join(LIGHT, f"{name}.onnx")), seed=0), path)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--runs", type=int, default=None, help="timed runs per engine (default: ~10 s worth, 5..200)")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.models.split(","):
            path = model_path(name, workdir)
            artifact = slimtvm.compile(path, os.path.join(workdir, f"{name}.so"))
            model = artifact.load()
            for threads in (int(t) for t in args.threads.split(",")):
                result = bench(model, path, threads=threads, runs=args.runs)
                rows.append((name, threads, result, artifact.manifest["timings_seconds"]["total"]))
                print(f"{name:18s} {threads} thread(s): slimtvm {result.slimtvm_ms:9.2f} ms, onnxruntime {result.onnxruntime_ms:8.2f} ms, ratio {result.ratio:6.2f}", flush=True)
    print()
    print("| model | threads | slimtvm ms | onnxruntime ms | ratio slimtvm/ort | runs | compile s |")
    print("|---|---|---|---|---|---|---|")
    for name, threads, result, compile_seconds in rows:
        print(f"| {name} | {threads} | {result.slimtvm_ms:.2f} | {result.onnxruntime_ms:.2f} | {result.ratio:.2f} | {result.runs} | {compile_seconds:.1f} |")
    print()
    for name, threads, result, _ in rows:
        print(f"claim: {name} at {threads} thread(s), untuned: slimtvm/onnxruntime = {result.ratio:.2f} (max relative output difference {result.max_relative_difference:.1e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
