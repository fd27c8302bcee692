"""slimtvm's fp32 path against onnxruntime, side by side in one process, untuned and tuned.

    .venv/bin/python benchmarks/fp32_vs_onnxruntime.py [--models resnet18,mobilenet_v2,...]
        [--threads 1,2] [--runs N] [--tune-trials N [--tune-threads 1] [--db-root DIR]] [--smoke]

For each model: compile with slimtvm for this machine with the default schedules, and — with
``--tune-trials N`` — tune it with ``slimtvm tune`` (MetaSchedule + XGBoost, kernels measured at
``--tune-threads``) into ``DB_ROOT/<model>`` (resumed if it exists) and compile again with that
database. Then, for each thread count, time onnxruntime and each slimtvm build in alternating
rounds after warm-up (median) and print the ratios slimtvm/onnxruntime (below 1: slimtvm is
faster) and the largest relative output difference. ``--smoke`` is CI's check that all of this
runs (digits CNN, 1 thread, 5 runs, 10 tuning trials), not how fast.

Models: resnet18, mobilenet_v2, resnext50, mobilenet_v3_large and efficientnet_b0 are
torchvision's architectures written in ONNX with random
weights (benchmarks/architectures.py); light_* are the onnx package's light zoo with seeded
random weights (their shipped weights are all 0.02); digits_cnn is examples/digits_cnn.onnx;
a path ending in ``.onnx`` is taken as it is (Hugging Face models from
scripts/export_hf_models.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import onnx

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, HERE)

import slimtvm  # noqa: E402
from slimtvm.runtime.bench import bench  # noqa: E402

DEFAULT_MODELS = "digits_cnn,resnet18,mobilenet_v2,light_squeezenet,light_resnet50"


def model_path(name: str, workdir: str) -> str:
    """The ONNX file of a named model (written to ``workdir`` with seeded random weights), or
    ``name`` itself when it is a path to an ``.onnx`` file (e.g. scripts/export_hf_models.py's).
    Refuses (SystemExit with a one-line message) a name that is none of these or a path that
    does not exist."""
    if name.endswith(".onnx"):
        if not os.path.isfile(name):
            raise SystemExit(f"error: model file not found: {name}")
        return os.path.abspath(name)
    if name == "digits_cnn":
        return os.path.join(HERE, "..", "examples", "digits_cnn.onnx")
    from architectures import ARCHITECTURES

    if name in ARCHITECTURES:
        path = os.path.join(workdir, f"{name}.onnx")
        onnx.save(ARCHITECTURES[name](seed=0), path)
        return path
    from light_zoo import LIGHT, with_logits_output, with_random_weights

    if not os.path.isfile(os.path.join(LIGHT, f"{name}.onnx")):
        light = sorted(f[: -len(".onnx")] for f in os.listdir(LIGHT) if f.endswith(".onnx"))
        raise SystemExit(
            f"error: unknown model {name!r}: give a path to an .onnx file, digits_cnn, one of {', '.join(sorted(ARCHITECTURES))}, or one of {', '.join(light)}"
        )
    path = os.path.join(workdir, f"{name}.onnx")
    # the logits as a second output: random weights saturate the final Softmax (outputs 0 and 1),
    # which alone would let the outputs check pass whatever the logits were
    model, _ = with_logits_output(with_random_weights(onnx.load(os.path.join(LIGHT, f"{name}.onnx")), seed=0))
    onnx.save(model, path)
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--runs", type=int, default=None, help="timed runs per engine (default: ~10 s worth, 5..200)")
    parser.add_argument("--tune-trials", type=int, default=0, help="tune each model with this many trials (default 0: untuned only)")
    parser.add_argument("--tune-threads", type=int, default=1, help="threads kernels are measured with while tuning (default 1)")
    parser.add_argument("--db-root", default=os.path.join(HERE, ".tuning"), help="tuning databases, one folder per model")
    parser.add_argument("--smoke", action="store_true", help="CI check: digits_cnn, 1 thread, 5 runs, 10 trials")
    args = parser.parse_args(argv)
    if args.smoke:
        args.models, args.threads, args.runs, args.tune_trials = "digits_cnn", "1", 5, 10
    from cpu_limits import cpu_name, measure

    limits = measure("host")
    print(f"CPU: {cpu_name()}; {limits.describe()}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        if args.smoke:
            args.db_root = os.path.join(workdir, "db")
        for name in args.models.split(","):
            path = model_path(name, workdir)
            builds = {"untuned": slimtvm.compile(path, os.path.join(workdir, f"{name}.so"))}
            tune_seconds = None
            if args.tune_trials:
                db = os.path.join(args.db_root, name)
                summary = slimtvm.tune(path, db, trials=args.tune_trials, threads=args.tune_threads, progress=False)
                tune_seconds = summary.seconds
                print(
                    f"{name}: tuned {len(summary.tasks)} kernels, {summary.trials_run} trials now ({summary.trials_before} before), {summary.seconds:.0f} s -> {db}",
                    flush=True,
                )
                builds["tuned"] = slimtvm.compile(path, os.path.join(workdir, f"{name}-tuned.so"), db=db)
            models = {kind: artifact.load() for kind, artifact in builds.items()}
            for threads in (int(t) for t in args.threads.split(",")):
                results = {kind: bench(model, path, threads=threads, runs=args.runs) for kind, model in models.items()}
                rows.append((name, threads, results, builds["untuned"].manifest["timings_seconds"]["total"], tune_seconds))
                text = ", ".join(f"{kind} {r.slimtvm_ms:8.2f} ms (ratio {r.ratio:5.2f})" for kind, r in results.items())
                print(f"{name:18s} {threads} thread(s): onnxruntime {results['untuned'].onnxruntime_ms:8.2f} ms, slimtvm {text}", flush=True)
    print()
    print("| model | threads | onnxruntime ms | slimtvm untuned ms | ratio | slimtvm tuned ms | ratio | compile s | tuning s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, threads, results, compile_seconds, tune_seconds in rows:
        untuned, tuned = results["untuned"], results.get("tuned")
        tuned_cells = f"{tuned.slimtvm_ms:.2f} | {tuned.ratio:.2f}" if tuned else "- | -"
        print(
            f"| {name} | {threads} | {untuned.onnxruntime_ms:.2f} | {untuned.slimtvm_ms:.2f} | {untuned.ratio:.2f} | {tuned_cells} | {compile_seconds:.1f} | {f'{tune_seconds:.0f}' if tune_seconds else '-'} |"
        )
    print()
    for name, threads, results, _, _ in rows:
        for kind, result in results.items():
            budget = f", {args.tune_trials} trials" if kind == "tuned" else ""
            print(
                f"claim: {name} at {threads} thread(s), {kind}{budget}: slimtvm/onnxruntime = {result.ratio:.2f} (max relative output difference {result.max_relative_difference:.1e})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
