"""Pruned ResNet-18 and MobileNetV2 (torch.nn.utils.prune, scripts/export_pruned_models.py):
slimtvm (sparse kernels where they pay), slimtvm's dense build and onnxruntime, side by side.

    .venv/bin/pip install -e '.[torch]'                             # torch, for the export (once)
    .venv/bin/python benchmarks/sparse_models.py [--models resnet18_layer90,...] [--threads 1,2]
        [--runs N] [--dir DIR] [--smoke]

Exports the pruned models into ``--dir`` (kept, reused when present), compiles each twice —
``--sparse auto`` and ``--sparse never`` (slimtvm's dense build of the same model) — and times
both libraries and onnxruntime on the same model in turns in one process (same thread count,
numpy in and out, medians after warm-up), outputs checked against onnxruntime. Prints the
FLOP-weighted sparsity, how many convs run sparse, the times, slimtvm's speed-up over
onnxruntime and over its own dense build, and the compile time and library size of both builds.
``--smoke``: CI's check that it runs (two tiny fixtures from tests/data, 1 thread, 5 runs).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

MODELS = ("resnet18_layer90", "resnet18_global90", "resnet18_layer80_masks", "resnet18_filters50", "mobilenet_v2_global90")


def model_paths(names, folder: str, smoke: bool) -> dict:
    """name → .onnx path: the tiny test fixtures for ``smoke``, else exported (once) into ``folder``."""
    if smoke:
        return {name: os.path.join(REPO, "tests", "data", f"pruned_{name}_tiny.onnx") for name in names}
    missing = [name for name in names if not os.path.exists(os.path.join(folder, f"{name}.onnx"))]
    if missing:
        script = os.path.join(REPO, "scripts", "export_pruned_models.py")
        subprocess.run([sys.executable, script, folder, "--only", ",".join(missing)], check=True)
    return {name: os.path.join(folder, f"{name}.onnx") for name in names}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--runs", type=int, default=None, help="timed runs per engine (default: about 10 s each)")
    parser.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "slimtvm-pruned-models"), help="where the exported models are kept")
    parser.add_argument("--smoke", action="store_true", help="CI check: tiny fixtures, 1 thread, 5 runs")
    args = parser.parse_args(argv)
    if args.smoke:
        args.models, args.threads, args.runs = "resnet18_layer90,resnet18_layer80_masks", "1", 5
    sys.path.insert(0, os.path.join(REPO, "src"))
    from cpu_limits import cpu_name

    import slimtvm
    from slimtvm.runtime.artifact import set_num_threads
    from slimtvm.runtime.bench import onnxruntime_session, relative_difference, time_in_turns

    print(f"CPU: {cpu_name()}")
    worst = 0.0
    with tempfile.TemporaryDirectory() as workdir:
        for name, path in model_paths(args.models.split(","), args.dir, args.smoke).items():
            builds = {}
            for mode in ("auto", "never"):
                artifact = slimtvm.compile(path, os.path.join(workdir, f"{name}_{mode}.so"), sparse=mode)
                builds[mode] = artifact
            passes = {entry["name"]: entry for entry in builds["auto"].manifest["passes"]}
            sparse_convs, convs = passes["sparse_layers"]["sparse_convs"], sum(1 for layer in passes["sparsity"]["layers"] if layer["op"] == "conv2d")
            seconds = {mode: artifact.manifest["timings_seconds"]["total"] for mode, artifact in builds.items()}
            sizes = {mode: artifact.manifest["library"]["bytes"] for mode, artifact in builds.items()}
            print(
                f"{name}: {100 * passes['sparsity']['flop_weighted_zeros']:.1f}% of multiply-adds zero; {sparse_convs} of {convs} convs sparse, "
                f"{passes['sparse_layers']['all_zero_convs']} all zero; compile {seconds['auto']:.1f} s (dense build {seconds['never']:.1f} s); "
                f"library {sizes['auto'] / 1e6:.1f} MB ({100 * sizes['auto'] / sizes['never']:.0f}% of the dense build's)"
            )
            sparse, dense = builds["auto"].load(), builds["never"].load()
            inputs = sparse.random_inputs(seed=1)
            for threads in (int(t) for t in args.threads.split(",")):
                set_num_threads(threads)
                session = onnxruntime_session(path, threads)
                reference = session.run(None, inputs)
                diff = max(relative_difference(list(engine.run(inputs).values())[0], reference[0]) for engine in (sparse, dense))
                worst = max(worst, diff)
                (ort_ms, dense_ms, sparse_ms), runs = time_in_turns(
                    [lambda: session.run(None, inputs), lambda: dense.run(inputs), lambda: sparse.run(inputs)], runs=args.runs, warmup=3
                )
                print(
                    f"  {threads} thread(s), {runs} runs: onnxruntime {ort_ms:.2f} ms, slimtvm dense {dense_ms:.2f} ms, slimtvm {sparse_ms:.2f} ms: "
                    f"{ort_ms / sparse_ms:.2f}x onnxruntime, {dense_ms / sparse_ms:.2f}x its dense build; max relative difference {diff:.1e}"
                )
    print(f"largest relative difference from onnxruntime: {worst:.1e}")
    return 0 if worst <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
