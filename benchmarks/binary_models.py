"""A binarized ResNet-18 (Bi-Real Net 18, PyTorch) compiled by slimtvm against onnxruntime running the float ResNet-18.

    .venv/bin/python benchmarks/binary_models.py [--threads 1,2] [--runs N] [--smoke]

Exports benchmarks/birealnet18.py's Bi-Real Net 18 (random weights; needs torch) and builds
torchvision's float ResNet-18 in ONNX (benchmarks/architectures.py). slimtvm compiles the binary
network; onnxruntime runs (a) the float ResNet-18 — the speed-up the issue asks about — and (b)
the same binary ONNX model — the exactness check: output cosine, top-1 agreement and the largest
relative difference on random inputs. Times are medians of alternating blocks after warm-up, in
one process, same thread count. ``--smoke`` (CI): examples/digits_bnn.onnx against
examples/digits_cnn.onnx, 1 thread, 5 runs; checks that the script works, not how fast.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))
sys.path.insert(0, HERE)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def models(workdir: str, smoke: bool) -> tuple:
    """(binary ONNX path, float ONNX path, input name, input shape)."""
    if smoke:
        examples = os.path.join(HERE, "..", "examples")
        return os.path.join(examples, "digits_bnn.onnx"), os.path.join(examples, "digits_cnn.onnx")
    import onnx
    from architectures import resnet18
    from birealnet18 import export

    binary = export(os.path.join(workdir, "birealnet18.onnx"))
    floating = os.path.join(workdir, "resnet18.onnx")
    onnx.save(resnet18(seed=0), floating)
    return binary, floating


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--runs", type=int, default=None, help="timed runs per engine (default: ~10 s worth, 5..200)")
    parser.add_argument("--inputs", type=int, default=8, help="random inputs for the exactness check")
    parser.add_argument("--smoke", action="store_true", help="CI check: digits BNN vs digits CNN, 1 thread, 5 runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.threads, args.runs, args.inputs = "1", 5, 2
    from cpu_limits import cpu_name, measure

    import slimtvm
    from slimtvm.runtime.artifact import set_num_threads
    from slimtvm.runtime.bench import onnxruntime_session, relative_difference, time_side_by_side

    print(f"CPU: {cpu_name()}; {measure('host').describe()}", flush=True)
    with tempfile.TemporaryDirectory() as workdir:
        binary_path, float_path = models(workdir, args.smoke)
        artifact = slimtvm.compile(binary_path, os.path.join(workdir, "binary.so"))
        report = next(p for p in artifact.manifest["passes"] if p["name"] == "binarize")
        print(
            f"slimtvm: {report['binary_convs']} binary convs, {report['binary_dense']} binary dense layers; compile {artifact.manifest['timings_seconds']['total']:.1f} s"
        )
        model = artifact.load()
        (name,) = model.input_names
        shape = model.random_inputs(0)[name].shape

        reference = onnxruntime_session(binary_path, 1)
        cosines, top1, differences = [], 0, []
        for seed in range(args.inputs):
            x = np.random.default_rng(100 + seed).standard_normal(shape).astype(np.float32)
            ours = next(iter(model.run({name: x}).values()))
            theirs = reference.run(None, {name: x})[0]
            cosines.append(cosine(ours, theirs))
            top1 += int(np.argmax(ours) == np.argmax(theirs))
            differences.append(relative_difference(ours, theirs))
        print(
            f"exactness vs onnxruntime on the binary model, {args.inputs} random inputs: min cosine {min(cosines):.6f}, top-1 agreement {top1}/{args.inputs}, max relative difference {max(differences):.1e}"
        )

        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        float_name = onnxruntime_session(float_path, 1).get_inputs()[0].name
        rows = []
        for threads in (int(t) for t in args.threads.split(",")):
            set_num_threads(threads)
            session = onnxruntime_session(float_path, threads)
            run_ours, run_theirs = (lambda: model.run({name: x})), (lambda: session.run(None, {float_name: x}))  # numpy in and out on both sides
            for _ in range(3):
                run_ours(), run_theirs()
            ours_ms, theirs_ms, runs = time_side_by_side(run_ours, run_theirs, args.runs)
            rows.append((threads, theirs_ms, ours_ms, runs))
            print(
                f"{threads} thread(s): onnxruntime float {theirs_ms:.2f} ms, slimtvm binary {ours_ms:.2f} ms, speed-up {theirs_ms / ours_ms:.2f}x", flush=True
            )
    label = "digits BNN vs digits CNN (smoke)" if args.smoke else "Bi-Real Net 18 (slimtvm) vs float ResNet-18 (onnxruntime)"
    print()
    print("| model | threads | onnxruntime float ms | slimtvm binary ms | speed-up |")
    print("|---|---|---|---|---|")
    for threads, theirs, ours, _ in rows:
        print(f"| {label} | {threads} | {theirs:.2f} | {ours:.2f} | {theirs / ours:.2f}x |")
    print()
    for threads, theirs, ours, runs in rows:
        print(
            f"claim: {label} at {threads} thread(s): {theirs / ours:.2f}x faster (median of {runs} runs); output cosine ≥ {min(cosines):.6f}, top-1 {top1}/{args.inputs}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
