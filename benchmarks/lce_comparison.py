"""Larq Compute Engine (LCE) and slimtvm side by side on the same Keras network, in one process.

    bash scripts/setup_lce_venv.sh                                              # once: LCE + TF in .venv-lce
    .venv-lce/bin/python scripts/export_larq_models.py /tmp/larq                 # NAME.onnx + NAME.tflite, same weights
    .venv/bin/slimtvm compile /tmp/larq/quicknet.onnx -o /tmp/larq/quicknet.so
    .venv-lce/bin/python benchmarks/lce_comparison.py /tmp/larq/quicknet.tflite /tmp/larq/quicknet.so [--threads 1,2] [--runs N]

LCE side: the flatbuffer LCE's converter made from the larq-zoo model, run by LCE's interpreter with
its default kernels at each thread count and with ``use_indirect_bgemm=True`` (its fastest x86
path, single-threaded). slimtvm side: the library compiled from the tf2onnx export of the same
Keras model (only TVM's runtime is needed here). Both take the same NHWC numpy input and return
numpy; the largest difference between their outputs is printed (LCE computes in its own order and
precision, so it is a sanity check, not the exactness test: that is slimtvm against onnxruntime
on the ONNX file). Times: medians of alternating blocks after warm-up. Prints the CPU.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))


def _median_ms(fn, runs: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tflite", help="LCE flatbuffer written by scripts/export_larq_models.py")
    parser.add_argument("library", help="slimtvm library compiled from the ONNX file of the same export")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        from larq_compute_engine.tflite.python.interpreter import Interpreter
    except ImportError:
        print("larq-compute-engine is not installed here: run scripts/setup_lce_venv.sh and use .venv-lce/bin/python", file=sys.stderr)
        return 2
    import slimtvm
    from slimtvm.runtime.artifact import set_num_threads

    with open(args.tflite, "rb") as file:
        flatbuffer = file.read()
    model = slimtvm.load(args.library)
    (name,) = model.input_names
    shape = tuple(model.manifest["inputs"][0]["shape"])
    image = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    ours = next(iter(model.run({name: image}).values()))
    theirs = np.asarray(Interpreter(flatbuffer, num_threads=1).predict(image))
    label = os.path.splitext(os.path.basename(args.tflite))[0]
    print(f"CPU: {cpu_name()}; model {label}; outputs: largest |slimtvm − LCE| = {np.max(np.abs(ours.reshape(-1) - theirs.reshape(-1))):.3g}")
    rows = []
    for threads in (int(t) for t in args.threads.split(",")):
        set_num_threads(threads)
        runners = {"LCE default kernels": Interpreter(flatbuffer, num_threads=threads)}
        if threads == 1:
            runners["LCE indirect BGEMM"] = Interpreter(flatbuffer, num_threads=1, use_indirect_bgemm=True)
        times = {label: [] for label in [*runners, "slimtvm"]}
        for _ in range(3):  # alternating rounds so that drift hits every engine alike
            for engine, interpreter in runners.items():
                times[engine].append(_median_ms(lambda i=interpreter: i.predict(image), max(3, args.runs // 3)))
            times["slimtvm"].append(_median_ms(lambda: model.run({name: image}), max(3, args.runs // 3)))  # numpy in and out, as LCE
        medians = {engine: statistics.median(values) for engine, values in times.items()}
        rows.append((threads, medians))
        print(f"{threads} thread(s): " + ", ".join(f"{engine} {ms:.2f} ms" for engine, ms in medians.items()), flush=True)
    print()
    print("| threads | engine | ms | slimtvm speed-up |")
    print("|---|---|---|---|")
    for threads, medians in rows:
        for engine, ms in medians.items():
            print(f"| {threads} | {engine} | {ms:.2f} | {ms / medians['slimtvm']:.2f}x |")
    print()
    for threads, medians in rows:
        best = min((ms, engine) for engine, ms in medians.items() if engine != "slimtvm")
        print(
            f"claim: {label} at {threads} thread(s): slimtvm {medians['slimtvm']:.2f} ms, fastest LCE ({best[1]}) {best[0]:.2f} ms: {best[0] / medians['slimtvm']:.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
