"""Larq Compute Engine (LCE) and slimtvm side by side on Bi-Real Net 18, in one process.

    bash scripts/setup_lce_venv.sh                                   # once: LCE + TF in .venv-lce
    .venv/bin/python benchmarks/birealnet18.py /tmp/birealnet18.onnx  # PyTorch export (main venv)
    .venv/bin/slimtvm compile /tmp/birealnet18.onnx -o /tmp/birealnet18.so
    .venv-lce/bin/python benchmarks/lce_comparison.py /tmp/birealnet18.so [--threads 1,2] [--runs N]

LCE side: larq-zoo's ``BiRealNet`` (the same Bi-Real Net 18 architecture, ``weights=None``)
converted by LCE's converter and run by its interpreter — default kernels at each thread count,
and ``use_indirect_bgemm=True`` (its fastest x86 path, single-threaded). slimtvm side: the given
library (only TVM's runtime is needed here). Random weights on both sides: speed only, the two
networks are not compared for outputs. Times: medians of alternating blocks after warm-up.
"""

from __future__ import annotations

import argparse
import os
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("library", help="slimtvm library of benchmarks/birealnet18.py's model")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import larq_compute_engine as lce
        import larq_zoo
        from larq_compute_engine.tflite.python.interpreter import Interpreter
    except ImportError:
        print("larq-compute-engine is not installed here: run scripts/setup_lce_venv.sh and use .venv-lce/bin/python", file=sys.stderr)
        return 2
    import slimtvm
    from slimtvm.runtime.artifact import set_num_threads

    flatbuffer = lce.convert_keras_model(larq_zoo.literature.BiRealNet(weights=None))
    model = slimtvm.load(args.library)
    (name,) = model.input_names
    ours_inputs = {name: np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)}
    lce_input = np.random.default_rng(0).standard_normal((1, 224, 224, 3)).astype(np.float32)
    rows = []
    for threads in (int(t) for t in args.threads.split(",")):
        set_num_threads(threads)
        runners = {"LCE default kernels": Interpreter(flatbuffer, num_threads=threads)}
        if threads == 1:
            runners["LCE indirect BGEMM"] = Interpreter(flatbuffer, num_threads=1, use_indirect_bgemm=True)
        times = {label: [] for label in [*runners, "slimtvm"]}
        for _ in range(3):  # alternating rounds so that drift hits every engine alike
            for label, interpreter in runners.items():
                times[label].append(_median_ms(lambda i=interpreter: i.predict(lce_input), max(3, args.runs // 3)))
            times["slimtvm"].append(_median_ms(lambda: model.run(ours_inputs), max(3, args.runs // 3)))  # numpy in and out, as LCE
        medians = {label: statistics.median(values) for label, values in times.items()}
        rows.append((threads, medians))
        print(f"{threads} thread(s): " + ", ".join(f"{label} {ms:.2f} ms" for label, ms in medians.items()), flush=True)
    print()
    print("| threads | engine | ms | slimtvm speed-up |")
    print("|---|---|---|---|")
    for threads, medians in rows:
        for label, ms in medians.items():
            print(f"| {threads} | {label} | {ms:.2f} | {ms / medians['slimtvm']:.2f}x |")
    print()
    for threads, medians in rows:
        best = min((ms, label) for label, ms in medians.items() if label != "slimtvm")
        print(
            f"claim: Bi-Real Net 18 at {threads} thread(s): slimtvm {medians['slimtvm']:.2f} ms, fastest LCE ({best[1]}) {best[0]:.2f} ms: {best[0] / medians['slimtvm']:.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
