"""Where does the time go? Per-kernel profile of a slimtvm artifact (TVM's VM instrumentation).

    .venv/bin/python benchmarks/profile_kernels.py light_resnet50 [--threads 1] [--top 15] [--db DIR] [--sparse auto|timed|always|never]
    .venv/bin/python benchmarks/profile_kernels.py resnet18 --threads 1,2 [--min-us 50] [--input-shape input=8,3,224,224]

Compiles the model (resnet18 / mobilenet_v2 from architectures.py, the light-zoo models with
seeded random weights, or a path to an .onnx), times every kernel call wall-clock around the VM's
call instructions, and prints the most expensive kernels with their share of the total.

With several thread counts (``--threads 1,2``) it prints the scaling table instead: every call
taking at least ``--min-us`` at the first count, its median time at each count and its speed-up,
marked ``<`` when below ``--goal`` (default 1.8× at 2 threads, scaled as 0.9 × threads); then the
time between kernels (the VM's own work: allocation, argument checks, calls), and the serial
fraction s that Amdahl's law gives from the whole run, T(n) = T(1) · (s + (1 − s) / n). Each
round also times a register-resident parallel multiply-add kernel (``cpu_limits.py``) at each
count: its speed-up is the most any compute-bound kernel can reach on this host at that moment
(a 2-core VM's second core gave ×1.69–2.00 from one run to the next, session 41), printed with
every call's speed-up as a fraction of it. Rounds in which the probe fell below
:data:`CALM_FLOOR` of the ideal are left out of the medians (:func:`calm_rounds`; the count is
printed). The
thread counts are measured in turns, round by round (:func:`profiles_in_turns`): measured one
after the other, a drift of this VM's speed between them read as poor scaling (session 20:
ResNet-18 ×1.61 in one pass, ×1.80 in turns; ×1.89 for the whole run in
compare_builds.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from cpu_limits import cpu_name, parallel_fma_probe  # noqa: E402
from fp32_vs_onnxruntime import model_path  # noqa: E402
from scaling import with_dynamic_batch  # noqa: E402

import slimtvm  # noqa: E402
from slimtvm.runtime import claiming_pool  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="digits_cnn, resnet18, mobilenet_v2, a light-zoo name (light_resnet50, ...) or an .onnx path")
    parser.add_argument("--threads", default="1", help="a thread count, or several (1,2): the scaling table")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--db", help="compile with this tuning database (from slimtvm tune)")
    parser.add_argument("--repeat", type=int, default=10, help="rounds (an instrumented run per thread count each); each kernel's median is shown")
    parser.add_argument("--sparse", default="auto", choices=["auto", "timed", "always", "never"], help="which convs with zeros run the sparse kernel")
    parser.add_argument("--input-shape", action="append", default=[], metavar="NAME=D1,D2,...", help="input shape (e.g. a batch: input=8,3,224,224)")
    parser.add_argument("--min-us", type=float, default=50.0, help="scaling table: calls at least this long at the first thread count")
    parser.add_argument("--goal", type=float, default=0.9, help="scaling table: speed-up goal per added thread (1.8x at 2 threads)")
    args = parser.parse_args(argv)
    from slimtvm.frontend.onnx_model import parse_shape_overrides

    thread_counts = [int(t) for t in args.threads.split(",")]
    with tempfile.TemporaryDirectory() as workdir:
        path = args.model if args.model.endswith(".onnx") else model_path(args.model, workdir)
        shapes = parse_shape_overrides(args.input_shape)
        if shapes:
            path = with_dynamic_batch(path, os.path.join(workdir, "dynamic_batch.onnx"))
        artifact = slimtvm.compile(path, os.path.join(workdir, "model.so"), db=args.db, sparse=args.sparse, input_shapes=shapes or None)
        # the host's own scaling, in the same rounds: what a compute-bound kernel can reach here
        probe = parallel_fma_probe("host", workdir)[0] if len(thread_counts) > 1 else None
        benches_before = claiming_pool.benches() or 0
        profiles = profiles_in_turns(artifact, thread_counts, args.repeat, probe=probe)
        benched = (claiming_pool.benches() or 0) - benches_before
    print(f"CPU: {cpu_name()}")
    if benched:  # a benched worker sits out up to 640 ms: the loops of that stretch ran on fewer threads
        print(f"slimtvm's pool benched a worker {benched} time(s) in these rounds (it kept the caller waiting twice within 100 ms: its core was held)")
    if len(thread_counts) == 1:
        print_top(args.model, profiles[thread_counts[0]], thread_counts[0], args.repeat, args.top)
    else:
        profiles, kept, total = calm_rounds(profiles, thread_counts)
        if total < MIN_CALM_ROUNDS:
            print(f"calm rounds: not sorted out ({total} rounds; --repeat {MIN_CALM_ROUNDS} or more to leave disturbed ones out)")
        elif kept >= MIN_CALM_ROUNDS:
            print(
                f"calm rounds: {kept} of {total} (the probe ×{CALM_FLOOR * 2:.2f} or more at 2 threads in the round, as much per added thread, and no worker benched); medians over those"
            )
        else:
            print(f"calm rounds: {kept} of {total}, too few: medians over every round, a disturbed run")
        print_scaling(args.model, profiles, thread_counts, args.min_us, args.goal)
    return 0


def profiles_in_turns(artifact, thread_counts: list, repeat: int, probe=None) -> dict:
    """{threads: profile} for every thread count, measured in turns: each of ``repeat`` rounds
    runs every thread count once (a warm-up run, a timed whole run, an instrumented run) before
    the next round, so that the VM's speed drifting (this 2-core VM's does, by 10–20% within
    minutes) moves all counts alike instead of biasing their ratio. A profile: per call (in call
    order) the median wall time in µs under ``"calls"``, their names under ``"names"``, the shapes
    of their tensor arguments under ``"shapes"``, and the median whole-run time (µs,
    uninstrumented) under ``"run"``. ``probe`` (a function of no arguments returning seconds, or
    None) runs after each thread count's runs in every round, on the same thread count; its
    median goes under ``"probe"``; each round's times under ``"rounds"`` (:func:`calm_rounds`)."""
    return dict(zip(thread_counts, _profiles_in_turns([(artifact, threads) for threads in thread_counts], repeat, probe=probe, keep_rounds=True)))


def builds_in_turns(artifacts: list, threads: int, repeat: int) -> list:
    """The profile (:func:`profiles_in_turns`) of each of ``artifacts`` at ``threads``, the builds
    taking turns round by round in one process."""
    return _profiles_in_turns([(artifact, threads) for artifact in artifacts], repeat)


def _profiles_in_turns(cases: list, repeat: int, between=None, probe=None, keep_rounds: bool = False) -> list:
    """One profile per ``(artifact, threads)`` case, the cases run in turns (see above);
    ``between`` (a function, or None) is called once at the end of every round, so that another
    engine profiled there takes the same turns, and is followed by a pause of
    :data:`~slimtvm.runtime.bench.SETTLE_SECONDS`: until session 43 the next case began while
    onnxruntime's idle worker still spun (about 32 ms) on the second core, and the first build's
    2-thread case of a short model read slow (a 256 → 256 1×1 conv at 56×56, alone: 3.5–6.0 ms
    against 1.9 for the same kernel in a later build). Each case's dropped runs last at least
    :data:`~slimtvm.runtime.bench.WARM_SECONDS`. ``probe`` (see :func:`profiles_in_turns`) after
    every case. ``keep_rounds``: each round's times too, under ``"rounds"`` (for
    :func:`calm_rounds`; left out otherwise, so that saved profiles stay small), with how many
    times slimtvm's pool benched a worker during the case's runs of that round."""
    import tvm
    from tvm.runtime.vm import VirtualMachine  # runtime only: also where TVM's compiler is absent

    from slimtvm.runtime.artifact import set_num_threads
    from slimtvm.runtime.bench import SETTLE_SECONDS, WARM_SECONDS, turn_order

    rows, started, recording_shapes = [], {}, [True]

    def instrument(func, name, before, _ret, *args):
        # The VM calls this around every call instruction; kernels are timed wall-clock. The
        # clock is read last before a call and first after it: reading the arguments' shapes
        # (FFI calls, tens of µs) inside the window once added that to every kernel, more at 2
        # threads than at 1, and read as poor scaling of the short kernels. Shapes are read in
        # the first instrumented run only.
        if before:
            started[name] = time.perf_counter()
            return 0
        elapsed = time.perf_counter() - started.pop(name)
        shapes = tuple(tuple(int(d) for d in arg.shape) for arg in args if hasattr(arg, "shape")) if recording_shapes[0] else None
        rows.append((name, elapsed * 1e6, shapes))
        return 0

    machines = {}
    for artifact, _ in cases:
        if artifact.library_path not in machines:
            library = tvm.runtime.load_module(artifact.library_path)
            plain, instrumented = VirtualMachine(library, tvm.cpu()), VirtualMachine(library, tvm.cpu())
            instrumented.set_instrument(instrument)
            model = artifact.load()
            inputs = [tvm.runtime.tensor(a) for a in model.check_inputs(model.random_inputs())]
            machines[artifact.library_path] = (plain, instrumented, inputs)
    whole = [[] for _ in cases]
    per_run = [[] for _ in cases]
    probed = [[] for _ in cases]
    benched = [[] for _ in cases]
    for round_index in range(repeat):
        for index in turn_order(len(cases), round_index):
            artifact, threads = cases[index]
            plain, instrumented, inputs = machines[artifact.library_path]
            set_num_threads(threads)
            benches_before = claiming_pool.benches() or 0
            warm_until = time.perf_counter() + WARM_SECONDS
            for _ in range(3 if round_index == 0 else 1):
                plain["main"](*inputs)
            while time.perf_counter() < warm_until:
                plain["main"](*inputs)
            begun = time.perf_counter()
            plain["main"](*inputs)
            whole[index].append((time.perf_counter() - begun) * 1e6)
            rows.clear()
            recording_shapes[0] = round_index == 0
            instrumented["main"](*inputs)
            per_run[index].append(list(rows))
            benched[index].append((claiming_pool.benches() or 0) - benches_before)
            if probe is not None:
                probed[index].append(probe())
        if between is not None:
            between()
            time.sleep(SETTLE_SECONDS)  # the other engine's idle workers stop spinning
    result = []
    for index in range(len(cases)):
        runs = per_run[index]
        names, shapes = [row[0] for row in runs[0]], [row[2] for row in runs[0]]
        calls = [statistics.median(run[i][1] for run in runs) for i in range(len(names))]
        result.append({"names": names, "calls": calls, "shapes": shapes, "run": statistics.median(whole[index])})
        if probe is not None:
            result[-1]["probe"] = statistics.median(probed[index])
        if keep_rounds:
            result[-1]["rounds"] = {"calls": [[row[1] for row in run] for run in runs], "run": whole[index], "benches": benched[index]}
            if probe is not None:
                result[-1]["rounds"]["probe"] = probed[index]
    return result


CALM_FLOOR = 0.925  # of ideal, per round: the probe at 2 threads ×1.85 or more (×1.93–1.97 when calm)
MIN_CALM_ROUNDS = 5


def calm_rounds(profiles: dict, thread_counts: list, floor: float = CALM_FLOOR) -> tuple:
    """``(profiles, kept, total)``: the profiles with every median taken over the rounds in
    which the host's probe (the register-resident multiply-adds, measured right after each thread
    count in the same round) scaled at least ``floor`` × the ideal at every thread count, and how
    many rounds those were. This VM loses its second core now and then for seconds at a time
    (session 48: the probe ×1.03 over a whole run, every kernel ×1.0–1.1); the medians of such
    rounds say nothing about the kernels. Nor do rounds in which slimtvm's pool benched a worker
    (it then sits out up to 640 ms and its loops run on fewer threads) while the probe, a few
    milliseconds long, still scaled (session 49: EfficientNet-B0 read ×1.01 at 2 threads in a
    run whose probe read ×2.02). Profiles without probes, or with fewer than
    :data:`MIN_CALM_ROUNDS` calm rounds, come back as they are (``kept`` says so)."""
    base = profiles[thread_counts[0]]
    if "rounds" not in base or "probe" not in base["rounds"]:
        return profiles, 0, 0
    total = len(base["rounds"]["probe"])
    keep = [
        r
        for r in range(total)
        if all(base["rounds"]["probe"][r] / profiles[t]["rounds"]["probe"][r] >= floor * t / thread_counts[0] for t in thread_counts[1:])
        and not any(profiles[t]["rounds"].get("benches", [0] * total)[r] for t in thread_counts)
    ]
    if len(keep) < MIN_CALM_ROUNDS:
        return profiles, len(keep), total
    calm = {}
    for t, profile in profiles.items():
        rounds = profile["rounds"]
        calm[t] = dict(profile)
        calm[t]["calls"] = [statistics.median(rounds["calls"][r][i] for r in keep) for i in range(len(profile["names"]))]
        calm[t]["run"] = statistics.median(rounds["run"][r] for r in keep)
        calm[t]["probe"] = statistics.median(rounds["probe"][r] for r in keep)
    return calm, len(keep), total


def profile_beside(artifact, threads: int, repeat: int, other) -> dict:
    """The profile of :func:`profile`, with ``other()`` (another engine's run) called once at the
    end of every round, so that both see the same stretches of this VM's speed."""
    return _profiles_in_turns([(artifact, threads)], repeat, between=other)[0]


def profile(artifact, threads: int, repeat: int) -> dict:
    """The profile of :func:`profiles_in_turns` at one thread count."""
    return profiles_in_turns(artifact, [threads], repeat)[threads]


def print_top(model_name, result, threads, repeat, top) -> None:
    totals = {}
    for name, duration in zip(result["names"], result["calls"]):
        totals[name] = totals.get(name, 0.0) + duration
    total = sum(totals.values())
    print(f"{model_name}: {total / 1e3:.2f} ms in {len(result['names'])} calls, {threads} thread(s), median of {repeat} runs per kernel")
    for name, duration in sorted(totals.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{duration / 1e3:9.3f} ms  {100 * duration / total:5.1f}%  {name}")


def print_scaling(model_name, profiles, thread_counts, min_us, goal) -> None:
    """The scaling table of the module docstring; where the profiles carry the host's probe (the
    register-resident parallel multiply-adds of the same rounds), its speed-up at each count and
    each call's speed-up as a fraction of it ("of host")."""
    base = profiles[thread_counts[0]]
    names = base["names"]
    if any(p["names"] != names for p in profiles.values()):
        raise SystemExit("the call sequence differs between thread counts; cannot compare")
    host = {t: base["probe"] / profiles[t]["probe"] for t in thread_counts} if "probe" in base else None
    head = " | ".join(f"{t} thr µs" for t in thread_counts)
    ups = " | ".join(f"×{t}" + (f" (of host ×{host[t]:.2f})" if host else "") for t in thread_counts[1:])
    print(f"{model_name}: calls ≥ {min_us:.0f} µs at {thread_counts[0]} thread(s); speed-up goal {goal:.2f} × threads")
    if host:
        line = ", ".join(f"×{host[t]:.2f} at {t}" for t in thread_counts[1:])
        print(
            f"host: register-resident parallel multiply-adds (benchmarks/cpu_limits.py) in the same rounds {line}: no compute-bound kernel scales past this here"
        )
    print(f"| # | kernel | {head} | {ups} |")
    print("|---|---|" + "---|" * (len(thread_counts) * 2 - 1))
    short = 0
    for index, name in enumerate(names):
        first = base["calls"][index]
        if first < min_us:
            continue
        times = [profiles[t]["calls"][index] for t in thread_counts]
        speedups = []
        for t, time_at in zip(thread_counts[1:], times[1:]):
            up = first / time_at
            miss = up < goal * t / thread_counts[0]
            short += miss
            speedups.append(f"{up:.2f}{' <' if miss else ''}" + (f" ({up / host[t]:.2f})" if host else ""))
        print(f"| {index} | {name} | " + " | ".join(f"{v:.0f}" for v in times) + " | " + " | ".join(speedups) + " |")
    print(f"{short} kernel(s) below the goal")
    for t in thread_counts:
        kernels = sum(profiles[t]["calls"])
        run = profiles[t]["run"]
        print(f"{t} thread(s): whole run {run / 1e3:.2f} ms, kernels {kernels / 1e3:.2f} ms, between kernels {max(run - kernels, 0) / 1e3:.2f} ms")
    first_run = profiles[thread_counts[0]]["run"]
    for t in thread_counts[1:]:
        ratio = profiles[t]["run"] / first_run
        n = t / thread_counts[0]
        serial = (ratio - 1 / n) / (1 - 1 / n)
        print(
            f"claim: {model_name} {t} vs {thread_counts[0]} thread(s): whole run ×{first_run / profiles[t]['run']:.2f}, serial fraction {serial:.3f} (Amdahl)"
        )


if __name__ == "__main__":
    sys.exit(main())
