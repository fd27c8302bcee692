"""When another process holds a core: slimtvm's thread pool, TVM's, and onnxruntime's, side by side.

    .venv/bin/python benchmarks/busy_core.py [--models resnet18,mobilenet_v2,birealnet18] [--threads 2]
        [--runs 15] [--rounds 3] [--bireal-onnx PATH] [--smoke]

Each model is compiled once (fp32 models from architectures.py with random weights; Bi-Real Net
18 binary, against onnxruntime's float ResNet-18 as in scaling.py) and its output checked
against onnxruntime on the same ONNX model (fp32 ≤ 1e-4 relative, binary cosine ≥ 0.999). Then,
in two conditions — "quiet", and "busy": one process of this script spinning on the last CPU of
this process's CPU set (started here, ended by its PID) — five variants take turns, ``runs``
timed runs each after warm-up, for ``rounds`` rounds (each round starting with the next variant): slimtvm at 1 thread, slimtvm at N threads
on its own pool (``runtime/claiming_pool.c``), the same library at N threads on TVM's pool,
and onnxruntime at 1 and N threads (numpy in, numpy out). Prints each variant's median, each
engine's N-thread speed-up over its own 1-thread time in the same condition, and how often
slimtvm's pool benched a stalling worker ("benches"). Every timed variant's output is checked
again in each condition.

``--smoke`` (CI): the digits CNN, 2 threads, 3 runs, 1 round; checks that the script works, not
how fast.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))
sys.path.insert(0, HERE)

from binary_models import cosine  # noqa: E402

import slimtvm  # noqa: E402
from slimtvm.runtime import claiming_pool  # noqa: E402
from slimtvm.runtime.artifact import set_num_threads  # noqa: E402
from slimtvm.runtime.bench import AGREEMENT, SETTLE_SECONDS, onnxruntime_session, relative_difference  # noqa: E402

EXAMPLES = os.path.join(HERE, "..", "examples")
BINARY_COSINE = 0.999
WARM_RUNS = 3


def model_pairs(names: list, workdir: str, bireal_onnx: str | None, smoke: bool) -> list:
    """[(label, slimtvm's ONNX path, onnxruntime's ONNX path for timing, kind)]."""
    if smoke:
        cnn = os.path.join(EXAMPLES, "digits_cnn.onnx")
        return [("digits_cnn", cnn, cnn, "fp32")]
    import onnx
    from architectures import ARCHITECTURES

    pairs = []
    for name in names:
        if name in ARCHITECTURES:
            path = os.path.join(workdir, f"{name}.onnx")
            onnx.save(ARCHITECTURES[name](seed=0), path)
            pairs.append((name, path, path, "fp32"))
        elif name == "birealnet18":
            if bireal_onnx is None:
                from birealnet18 import export  # needs torch

                bireal_onnx = export(os.path.join(workdir, "birealnet18.onnx"))
            floating = os.path.join(workdir, "resnet18-float.onnx")
            onnx.save(ARCHITECTURES["resnet18"](seed=0), floating)
            pairs.append(("birealnet18 vs float resnet18", bireal_onnx, floating, "binary"))
        else:
            raise SystemExit(f"unknown model {name!r} (resnet18, mobilenet_v2, birealnet18)")
    return pairs


def start_busy_process() -> tuple:
    """(the spinning process, its CPU): pinned to the last CPU this process may use."""
    cpu = max(os.sched_getaffinity(0))
    process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    os.sched_setaffinity(process.pid, {cpu})
    time.sleep(0.5)
    return process, cpu


def check(label: str, kind: str, ours: np.ndarray, theirs: np.ndarray) -> str:
    """The agreement with onnxruntime as text; stops the run when it does not hold."""
    if kind == "binary":
        value = cosine(ours, theirs)
        if value < BINARY_COSINE:
            raise SystemExit(f"{label}: slimtvm differs from onnxruntime (output cosine {value:.6f})")
        return f"cosine {value:.6f}"
    value = relative_difference(ours, theirs)
    if value > AGREEMENT:
        raise SystemExit(f"{label}: slimtvm differs from onnxruntime (max relative difference {value:.1e})")
    return f"max relative difference {value:.1e}"


def measure(label, path, reference, kind, threads, runs, rounds, workdir) -> list:
    """Rows (label, condition, {variant: median ms}, agreement text)."""
    probe = onnxruntime_session(path, 1).get_inputs()[0]
    artifact = slimtvm.compile(path, os.path.join(workdir, f"{label.split()[0]}.so"))
    model = artifact.load()
    if not model.claiming_pool:
        raise SystemExit(f"{label}: the library does not use slimtvm's pool (SLIMTVM_THREAD_POOL=tvm, or no parallel kernel)")
    x = np.random.default_rng(0).standard_normal([int(d) for d in probe.shape]).astype(np.float32)
    expected = onnxruntime_session(path, 1).run(None, {probe.name: x})[0]
    sessions = {count: onnxruntime_session(reference, count) for count in (1, threads)}
    reference_name = sessions[1].get_inputs()[0].name

    def slimtvm_run(count: int, pool: str):
        def configure():
            set_num_threads(count)
            (claiming_pool.attach if pool == "slimtvm" else claiming_pool.use_tvm_pool)(model.library_path)

        return configure, lambda: next(iter(model.run({probe.name: x}).values()))

    variants = {
        "slimtvm 1": slimtvm_run(1, "slimtvm"),
        f"slimtvm {threads}": slimtvm_run(threads, "slimtvm"),
        f"slimtvm {threads} on TVM's pool": slimtvm_run(threads, "tvm"),
        "onnxruntime 1": (lambda: None, lambda: sessions[1].run(None, {reference_name: x})[0]),
        f"onnxruntime {threads}": (lambda: None, lambda: sessions[threads].run(None, {reference_name: x})[0]),
    }
    rows = []
    for condition in ("quiet", "busy"):
        busy = start_busy_process() if condition == "busy" else None
        benches_before = claiming_pool.benches()
        try:
            times = {name: [] for name in variants}
            agreement = ""
            names = list(variants)
            for round_index in range(rounds):
                for name in names[round_index % len(names) :] + names[: round_index % len(names)]:  # each round starts elsewhere
                    configure, run = variants[name]
                    configure()
                    time.sleep(SETTLE_SECONDS)
                    for _ in range(WARM_RUNS):
                        output = run()
                    if name.startswith("slimtvm"):
                        agreement = check(f"{label} ({name}, {condition})", kind, output, expected)
                    for _ in range(runs):
                        start = time.perf_counter()
                        run()
                        times[name].append((time.perf_counter() - start) * 1e3)
        finally:
            if busy is not None:
                busy[0].kill()
                busy[0].wait()
        medians = {name: statistics.median(values) for name, values in times.items()}
        where = f" (a process spinning on CPU {busy[1]})" if busy else ""
        benched = claiming_pool.benches() - benches_before
        print(f"{label}, {condition}{where}: " + ", ".join(f"{name} {ms:.2f} ms" for name, ms in medians.items()) + f"; {benched} benches", flush=True)
        rows.append((label, condition, medians, agreement, benched))
    claiming_pool.attach(model.library_path)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet18,mobilenet_v2,birealnet18")
    parser.add_argument("--threads", type=int, default=2, help="N (default 2)")
    parser.add_argument("--runs", type=int, default=15, help="timed runs per variant per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bireal-onnx", help="an exported Bi-Real Net 18 (default: export birealnet18.py with torch)")
    parser.add_argument("--smoke", action="store_true", help="CI check: digits CNN, 2 threads, 3 runs, 1 round")
    args = parser.parse_args(argv)
    if args.smoke:
        args.threads, args.runs, args.rounds = 2, 3, 1
    if args.threads < 2:
        raise SystemExit("--threads must be at least 2")
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("this process may use only one CPU: nothing to compare")
    from cpu_limits import cpu_name

    print(f"CPU: {cpu_name()}, {len(os.sched_getaffinity(0))} CPUs for this process", flush=True)
    n = args.threads
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for label, path, reference, kind in model_pairs(args.models.split(","), workdir, args.bireal_onnx, args.smoke):
            rows += measure(label, path, reference, kind, n, args.runs, args.rounds, workdir)
    print()
    print(
        f"| model | condition | slimtvm 1 thr ms | slimtvm {n} thr ms (×) | on TVM's pool ms (×) | onnxruntime 1 thr ms | onnxruntime {n} thr ms (×) | benches |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for label, condition, ms, _, benched in rows:
        ours1, ours, tvm_pool = ms["slimtvm 1"], ms[f"slimtvm {n}"], ms[f"slimtvm {n} on TVM's pool"]
        ort1, ort = ms["onnxruntime 1"], ms[f"onnxruntime {n}"]
        print(
            f"| {label} | {condition} | {ours1:.2f} | {ours:.2f} (×{ours1 / ours:.2f}) | {tvm_pool:.2f} (×{ours1 / tvm_pool:.2f}) | {ort1:.2f} | {ort:.2f} (×{ort1 / ort:.2f}) | {benched} |"
        )
    print()
    on_tvm_pool = f"slimtvm {n} on TVM's pool"
    for label, condition, ms, agreement, _ in rows:
        print(
            f"claim: {label}, {condition}, {n} threads: slimtvm {ms[f'slimtvm {n}']:.2f} ms on its pool, {ms[on_tvm_pool]:.2f} ms on TVM's, onnxruntime {ms[f'onnxruntime {n}']:.2f} ms ({agreement})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
