"""Two or more slimtvm builds of one ONNX model, timed in turns with onnxruntime in one process.

    .venv/bin/python benchmarks/compare_builds.py MODEL.onnx A.so B.so [...] [--threads 1,2] [--runs N]

For before/after checks of a change to slimtvm: build the model with each version (for example
``git worktree add /tmp/before REV`` and that tree's ``slimtvm compile``), then time every build
and onnxruntime on the same input, in turns of a few runs each after warm-up, same thread count,
numpy in and numpy out on every side. Prints each build's median, its ratio to onnxruntime and to
the first build, and its largest relative output difference from onnxruntime (all builds are
checked). ``--float-reference`` times onnxruntime on another model (e.g. the float network a
binary one replaces); outputs are then checked against onnxruntime on MODEL.onnx only.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

from slimtvm.runtime.artifact import load, set_num_threads  # noqa: E402
from slimtvm.runtime.bench import onnxruntime_session, relative_difference, time_in_turns  # noqa: E402


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            return next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="the ONNX model every build was compiled from")
    parser.add_argument("builds", nargs="+", help="compiled libraries (.so with their .json)")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--runs", type=int, default=None, help="timed runs per engine (default: ~10 s worth, 5..200)")
    parser.add_argument("--float-reference", help="time onnxruntime on this model instead (same input)")
    args = parser.parse_args(argv)
    models = [load(path) for path in args.builds]
    inputs = models[0].random_inputs(0)  # every input (token ids, masks: small integers, 0 / 1)
    print(f"CPU: {cpu_model()}; {len(models)} builds of {os.path.basename(args.model)}")
    reference = onnxruntime_session(args.model, 1).run(None, inputs)  # every output, in the model's order
    differences = [max(relative_difference(ours, theirs) for ours, theirs in zip(model.run(inputs).values(), reference)) for model in models]
    timed_path = args.float_reference or args.model
    for threads in (int(t) for t in args.threads.split(",")):
        set_num_threads(threads)
        session = onnxruntime_session(timed_path, threads)
        # a float reference network takes the same values under its own input name
        feed = inputs if args.float_reference is None else {session.get_inputs()[0].name: next(iter(inputs.values()))}
        functions = [lambda model=model: model.run(inputs) for model in models] + [lambda: session.run(None, feed)]
        for fn in functions * 3:
            fn()
        medians, runs = time_in_turns(functions, args.runs)
        ort_ms = medians[-1]
        print(f"{threads} thread(s), {runs} runs each: onnxruntime {ort_ms:.2f} ms ({os.path.basename(timed_path)})")
        for path, ms, difference in zip(args.builds, medians, differences):
            print(
                f"  {path}: {ms:.2f} ms, ratio to onnxruntime {ms / ort_ms:.3f}, to the first build {ms / medians[0]:.3f}, max relative difference {difference:.1e}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
