"""Two or more slimtvm builds of one ONNX model, timed in turns with onnxruntime in one process.

    .venv/bin/python benchmarks/compare_builds.py MODEL.onnx A.so B.so [...] [--threads 1,2] [--runs N]

For before/after checks of a change to slimtvm: build the model with each version (for example
``git worktree add /tmp/before REV`` and that tree's ``slimtvm compile``), then time every build
and onnxruntime on the same input, in turns of a few runs each after warm-up, same thread count,
numpy in and numpy out on every side. Prints each build's median, its ratio to onnxruntime and to
the first build, and its largest relative output difference from onnxruntime (all builds are
checked). ``--float-reference`` times onnxruntime on another model (e.g. the float network a
binary one replaces); outputs are then checked against onnxruntime on MODEL.onnx only.

    .venv/bin/python benchmarks/compare_builds.py MODEL.onnx A.so B.so --kernels [--repeat 20] [--min-us 40]

``--kernels`` times per kernel instead (``profile_kernels.py``'s instrumentation): each round
runs every build at every thread count once, whole and instrumented, then onnxruntime's whole
run at each count, so all of them see the same stretches of this VM's speed; prints the whole
runs (median of the rounds) and every call of at least ``--min-us`` in the first build, µs per
build and thread count with its ratio to the first build. On the 2-core Intel VM two identical
builds once timed 27% apart at 2 threads in the whole-run turns above (session 42) and within
3% per kernel this way.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from slimtvm.runtime.artifact import load, set_num_threads  # noqa: E402
from slimtvm.runtime.bench import SETTLE_SECONDS, onnxruntime_session, relative_difference, time_in_turns  # noqa: E402


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
    parser.add_argument("--kernels", action="store_true", help="per-kernel times of every build in turns (see above)")
    parser.add_argument("--repeat", type=int, default=20, help="--kernels: rounds")
    parser.add_argument("--min-us", type=float, default=40.0, help="--kernels: calls at least this long in the first build")
    args = parser.parse_args(argv)
    if args.kernels:
        return compare_kernels(args.model, args.builds, [int(t) for t in args.threads.split(",")], args.repeat, args.min_us)
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


def compare_kernels(model_path: str, build_paths: list, thread_counts: list, repeat: int, min_us: float) -> int:
    """The ``--kernels`` table of the module docstring, call by call: a call whose kernel has
    another name in a later build (a layer lowered differently) shows both names. Refuses builds
    with different numbers of calls (their calls do not pair up)."""
    import time
    from types import SimpleNamespace

    from profile_kernels import _profiles_in_turns

    models = [load(path) for path in build_paths]
    inputs = models[0].random_inputs(0)
    reference = onnxruntime_session(model_path, 1).run(None, inputs)
    for path, model in zip(build_paths, models):
        difference = max(relative_difference(ours, theirs) for ours, theirs in zip(model.run(inputs).values(), reference))
        print(f"{path}: max relative difference from onnxruntime {difference:.1e}")
    sessions = {threads: onnxruntime_session(model_path, threads) for threads in thread_counts}
    ort_times = {threads: [] for threads in thread_counts}

    def onnxruntime_round():
        time.sleep(SETTLE_SECONDS)  # TVM's idle workers stop spinning (runtime/bench.py)
        for threads, session in sessions.items():
            session.run(None, inputs)
            begun = time.perf_counter()
            session.run(None, inputs)
            ort_times[threads].append((time.perf_counter() - begun) * 1e6)

    artifacts = [SimpleNamespace(library_path=path, load=lambda path=path: load(path)) for path in build_paths]
    cases = [(artifact, threads) for artifact in artifacts for threads in thread_counts]
    profiles = _profiles_in_turns(cases, repeat, between=onnxruntime_round)
    by_case = dict(zip([(index, threads) for index in range(len(artifacts)) for threads in thread_counts], profiles))
    names = by_case[(0, thread_counts[0])]["names"]
    if any(len(profile["names"]) != len(names) for profile in profiles):
        raise SystemExit("the builds make different numbers of calls; cannot compare kernel by kernel")
    build_names = [by_case[(index, thread_counts[0])]["names"] for index in range(len(artifacts))]
    names = [" / ".join(dict.fromkeys(per_build)) for per_build in zip(*build_names)]
    print(f"CPU: {cpu_model()}; {len(artifacts)} builds of {os.path.basename(model_path)}, {repeat} rounds in turns")
    for threads in thread_counts:
        ort_us = statistics.median(ort_times[threads])
        runs = ", ".join(
            f"{os.path.basename(path)} {by_case[(index, threads)]['run'] / 1e3:.2f} ms ({by_case[(index, threads)]['run'] / ort_us:.3f})"
            for index, path in enumerate(build_paths)
        )
        print(f"{threads} thread(s), whole run: onnxruntime {ort_us / 1e3:.2f} ms; {runs} (ratio to onnxruntime)")
    columns = " | ".join(f"{os.path.basename(path)} {threads} thr µs" for path in build_paths for threads in thread_counts)
    print(f"| # | kernel | {columns} |")
    print("|---|---|" + "---|" * (len(build_paths) * len(thread_counts)))
    for call, name in enumerate(names):
        if by_case[(0, thread_counts[0])]["calls"][call] < min_us:
            continue
        cells = []
        for index in range(len(build_paths)):
            for threads in thread_counts:
                us = by_case[(index, threads)]["calls"][call]
                first = by_case[(0, threads)]["calls"][call]
                cells.append(f"{us:.0f}" + (f" ({us / first:.2f})" if index else ""))
        print(f"| {call} | {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
