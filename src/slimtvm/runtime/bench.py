"""Time a slimtvm artifact and onnxruntime on the same inputs, in one process, same thread count.

Each engine gets warm-up runs; then the two are timed in alternating blocks of consecutive runs (so
drift on a shared machine hits both alike) and the medians are compared. The first run of each
block is dropped and each block starts after a short pause: both runtimes keep their worker threads
spinning for a while after a run, and on a machine with few cores the other engine's spinning
threads would slow this one down.
Both engines do the same work per run: numpy arrays in, numpy arrays out. The outputs are
compared by name, shape and value; above :data:`AGREEMENT` relative difference the result says
the outputs differ (and ``slimtvm bench`` exits non-zero).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import numpy as np

from ..errors import SlimError, first_line

AGREEMENT = 1e-4  # largest relative output difference (max|a − b| / max|b|) that counts as agreeing


@dataclass
class BenchResult:
    slimtvm_ms: float
    onnxruntime_ms: float
    runs: int
    threads: int
    max_relative_difference: float
    worst_output: str = ""
    thread_pool: str = "slimtvm's"  # whose pool ran slimtvm's parallel loops: "slimtvm's" or "TVM's"

    @property
    def outputs_agree(self) -> bool:
        return self.max_relative_difference <= AGREEMENT

    @property
    def ratio(self) -> float:
        """slimtvm time / onnxruntime time: below 1 means slimtvm is faster."""
        return self.slimtvm_ms / self.onnxruntime_ms

    def lines(self) -> list:
        return [
            f"slimtvm      {self.slimtvm_ms:10.3f} ms  (median of {self.runs} runs, {self.threads} thread{'s' if self.threads > 1 else ''}"
            + (f", {self.thread_pool} thread pool)" if self.threads > 1 else ")"),
            f"onnxruntime  {self.onnxruntime_ms:10.3f} ms  (median of {self.runs} runs, {self.threads} thread{'s' if self.threads > 1 else ''})",
            (
                f"outputs agree: max relative difference {self.max_relative_difference:.2e}"
                if self.outputs_agree
                else f"outputs DIFFER: max relative difference {self.max_relative_difference:.2e} on output {self.worst_output!r} (more than {AGREEMENT:g})"
            ),
            f"ratio slimtvm/onnxruntime = {self.ratio:.2f}  ({'slimtvm faster' if self.ratio < 1 else 'onnxruntime faster'}, speed-up {1 / self.ratio:.2f}x)",
            "work per run on both sides: numpy arrays in, numpy arrays out",
        ]


def relative_difference(actual: np.ndarray, expected: np.ndarray) -> float:
    """max|actual − expected| / max|expected| (0 when both are all zero)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    diff = float(np.max(np.abs(actual - expected))) if expected.size else 0.0
    if scale == 0.0:
        return diff
    return diff / scale


def onnxruntime_session(model_path: str, threads: int):
    """An onnxruntime CPU session limited to ``threads`` intra-op threads (one inter-op thread)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise SlimError("onnxruntime is not installed: pip install onnxruntime (or slimtvm's [bench] extra)") from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    except Exception as err:
        raise SlimError(f"onnxruntime cannot load {model_path}: {first_line(err)}") from None


BLOCK = 5  # timed runs per engine per block (after the dropped warm-up runs)
# Pause before each block: the other engine's idle workers spin after its last run (measured as
# the process's CPU time while it sleeps, 2 threads, session 30: TVM's pool 114 ms, onnxruntime's
# 32 ms) and take a core from the engine timed next. With 50 ms, onnxruntime's light SqueezeNet at
# 2 threads alternated 2.9 / 6.9 ms runs after slimtvm's blocks (1.9 ms alone).
SETTLE_SECONDS = 0.2
# Dropped runs after the pause, at least this long. After any pause (this 2-core VM, Zen 5,
# Bi-Real Net 18 at 2 threads, medians of 15: session 30) the first run took 1.55 ms and the
# next ones 1.16, 1.10, 1.01, 0.95 … 0.88 ms, steady after about 8 ms of runs; with one dropped
# run, a block of 5 sub-millisecond runs timed that ramp (three copies of one library timed in
# turns after onnxruntime: 1.23 / 0.90 / 0.88 ms), while onnxruntime's 8 ms runs were past it.
WARM_SECONDS = 0.02


def bench(model, onnx_path: str, threads: int = 1, runs: int | None = None, warmup: int = 3, seed: int = 0, budget_seconds: float = 10.0) -> BenchResult:
    """Benchmark a loaded :class:`~slimtvm.runtime.artifact.Model` against onnxruntime on ``onnx_path``.

    ``runs=None`` picks a count from ``budget_seconds`` per engine (at least 5, at most 200).
    Refuses a model whose input or output names, or output shapes, differ from the ONNX model's.
    Different output values are a result, not an error: see :attr:`BenchResult.outputs_agree`.
    """
    from .artifact import set_num_threads

    if threads < 1:
        raise SlimError(f"--threads must be at least 1, not {threads}")
    set_num_threads(threads)
    session = onnxruntime_session(onnx_path, threads)
    ort_names = sorted(i.name for i in session.get_inputs())
    if ort_names != sorted(model.input_names):
        raise SlimError(f"{onnx_path} takes inputs {ort_names}, the artifact takes {sorted(model.input_names)}: not the same model")
    ort_outputs = sorted(o.name for o in session.get_outputs())
    if ort_outputs != sorted(model.output_names):
        raise SlimError(f"{onnx_path} has outputs {ort_outputs}, the artifact has {sorted(model.output_names)}: not the same model")
    inputs = model.random_inputs(seed)

    def run_tvm():
        return model.run(inputs)

    def run_ort():
        return session.run(None, inputs)

    for _ in range(max(1, warmup)):
        run_tvm()
        run_ort()
    ours = run_tvm()
    theirs = dict(zip([o.name for o in session.get_outputs()], run_ort()))
    differences = {}
    for name in model.output_names:
        if np.shape(ours[name]) != np.shape(theirs[name]):
            raise SlimError(
                f"output {name!r} has shape {list(np.shape(ours[name]))} here and {list(np.shape(theirs[name]))} in {onnx_path}: not the same model"
            )
        differences[name] = relative_difference(ours[name], theirs[name])
    worst = max(differences, key=differences.get)
    tvm_ms, ort_ms, runs = time_side_by_side(run_tvm, run_ort, runs, budget_seconds)
    pool = "slimtvm's" if getattr(model, "claiming_pool", False) else "TVM's"
    return BenchResult(tvm_ms, ort_ms, runs, threads, differences[worst], worst, pool)


def time_side_by_side(first, second, runs: int | None = None, budget_seconds: float = 10.0, block: int = BLOCK, warmup: int = 0) -> tuple:
    """Median milliseconds of ``first()`` and ``second()`` timed in alternating blocks of ``block``
    runs (each block after ``warmup`` untimed runs, at least one), and the run count.

    Call after warm-up. ``runs=None`` picks a count from ``budget_seconds`` per engine (5..200).
    A ``block`` as large as ``runs`` times the engines one after the other: for sub-millisecond
    kernels at several threads, where one engine's spinning workers slow the other's next runs.
    """
    (first_ms, second_ms), runs = time_in_turns([first, second], runs, budget_seconds, block, warmup)
    return first_ms, second_ms, runs


def turn_order(cases: int, turn: int) -> list:
    """The order in which turn (or round) ``turn`` runs ``cases`` cases: each turn starts one
    case later than the one before, so that every case takes every place equally often. In a
    fixed order the first case always ran right after the other engine's turn and the settling
    pause: session 50 (Emerald Rapids, 2 threads, ``benchmarks/profile_kernels.py``'s rounds) read
    one build of ResNet-50 at 32.3 ms against 29.8 for a byte-identical copy of it in third
    place, 20–28% apart on single kernels."""
    return [(turn + offset) % cases for offset in range(cases)]


def time_in_turns(
    functions: list,
    runs: int | None = None,
    budget_seconds: float = 10.0,
    block: int = BLOCK,
    warmup: int = 0,
    settle_seconds: float = SETTLE_SECONDS,
    warm_seconds: float = WARM_SECONDS,
) -> tuple:
    """([median milliseconds of each function], run count): the functions take turns (each turn
    starting with the next function), ``block`` timed runs each after a pause of
    ``settle_seconds`` and ``warmup`` untimed runs (at least one, and ``warm_seconds`` of
    them), as :func:`time_side_by_side`. Functions that share
    one thread pool (builds of slimtvm only) may pause less: their pool's spinning workers serve
    the next one. ``block=runs`` with a longer ``warm_seconds`` times each function alone, in
    its steady state."""
    if runs is None:
        single = max(max(_time_once(fn) for fn in functions), 1e-6)
        runs = int(min(200, max(5, budget_seconds / single)))
    times = [[] for _ in functions]
    turn = 0
    while len(times[0]) < runs:
        count = min(block, runs - len(times[0]))
        for index in turn_order(len(functions), turn):
            time.sleep(settle_seconds)
            _warm_up(functions[index], max(1, warmup), warm_seconds)
            times[index].extend(_time_once(functions[index]) for _ in range(count))
        turn += 1
    return [statistics.median(fn_times) * 1e3 for fn_times in times], runs


def _warm_up(fn, runs: int, seconds: float = WARM_SECONDS) -> None:
    """Dropped runs: at least ``runs``, and for at least ``seconds``."""
    start = time.perf_counter()
    done = 0
    while done < runs or time.perf_counter() - start < seconds:
        fn()
        done += 1


def _time_once(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
