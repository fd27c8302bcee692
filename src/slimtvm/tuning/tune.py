"""``slimtvm tune``: MetaSchedule with the XGBoost cost model over a model's kernels.

The model goes through the same passes as ``compile`` up to kernel fusion; each fused PrimFunc
that one of slimtvm's kernel families covers (schedules/registry.py) is a task. Other kernels
(pooling, element-wise, layout changes) keep their default schedules.

Before searching, each task's *default* schedule is measured and committed like any other
candidate, so ``compile --db`` never picks something slower than the untuned build measured.
The search then runs MetaSchedule's evolutionary strategy on the templates' design spaces
(each family's ``design_spaces``), measuring on this machine or on a remote device over TVM RPC.

Budget and resume: ``trials`` is the total number of measured schedules the database should
hold for this model's tasks. A run that finds records already there (a previous run, killed or
finished) only measures the difference; records are appended as they are measured, so killing
the process loses at most the measurement in flight.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
import time
from dataclasses import dataclass, field

from ..errors import SlimError, first_line
from ..frontend.onnx_import import import_onnx
from ..lowering.winograd_layers import CONV_ALGORITHMS
from ..targets.presets import resolve_target
from .database import open_database
from .farm import DEFAULT_MEASURE_TIMEOUT_SECONDS, check_farm, farm_builder_and_runner, parse_tracker_address


@dataclass
class TuneTask:
    """One kernel to tune: its PrimFunc module, how often the model calls it, which template."""

    name: str
    mod: object  # IRModule with one PrimFunc
    weight: int
    kind: str


@dataclass
class TuneSummary:
    """What a tuning run did (printed by the CLI, returned by the API)."""

    database: str
    tasks: list  # TuneTask
    trials_before: int
    trials_run: int
    seconds: float
    best_seconds: dict = field(default_factory=dict)  # task name -> best measured time (s)
    default_seconds: dict = field(default_factory=dict)  # task name -> default schedule's time (s)
    retried: int = 0  # measurements sent to another device after theirs died or hung (--tracker)


def extract_tuning_tasks(model, spec, input_shapes=None, all_kernels: bool = False, sparse_timer=None, conv_algorithm: str = "auto") -> list:
    """The model's kernels that slimtvm's kernel families cover, as :class:`TuneTask` s; with
    ``all_kernels`` also every other kernel (kind ``"generic"``: MetaSchedule's own search space).
    ``sparse_timer`` and ``conv_algorithm``: as :func:`tune_model`'s."""
    import tvm
    from tvm import s_tir
    from tvm.s_tir import meta_schedule as ms

    from ..lowering.sequence import LoweringPasses
    from ..passes.sequence import GraphPasses
    from ..schedules.channel_permutation import is_channel_permutation
    from ..schedules.channel_relayout import is_channel_relayout
    from ..schedules.registry import family_of
    from ..targets.kernel_target import KernelTarget

    frontend = import_onnx(model, input_shapes)
    target = spec.tvm_target()
    with target:
        try:
            steps = GraphPasses().sequence() + LoweringPasses(KernelTarget.of(target), sparse_timer=sparse_timer, conv_algorithm=conv_algorithm).to_kernels()
            mod = tvm.transform.Sequential(steps)(frontend.mod)
        except Exception as err:  # noqa: BLE001 - TVM errors: one line
            raise SlimError(f"preparing the model for tuning failed: {type(err).__name__}: {first_line(err)}") from None
    tasks = []
    for extracted in ms.relax_integration.extract_tasks(mod, target):
        task_mod = extracted.dispatched[0]
        family = family_of(s_tir.Schedule(task_mod))
        written_whole = is_channel_relayout(s_tir.Schedule(task_mod)) or is_channel_permutation(s_tir.Schedule(task_mod))
        if (family is not None and not family.tunable) or written_whole:
            continue  # e.g. sparse convs and the relayout and permutation kernels: written in their final form
        kind = family.name if family is not None else ("generic" if all_kernels else None)
        if kind is not None:
            tasks.append(TuneTask(extracted.task_name, task_mod, int(extracted.weight), kind))
    return tasks


def tune_model(
    model,
    db: str,
    target="host",
    trials: int = 64,
    rpc: str | None = None,
    threads: int | None = None,
    input_shapes: dict | None = None,
    trials_per_round: int = 8,
    progress: bool = True,
    seed: int | None = None,
    all_kernels: bool = False,
    tracker: str | None = None,
    key: str | None = None,
    parallel: int | None = None,
    measure_timeout: float | None = None,
    sparse_timer=None,
    conv_algorithm: str = "auto",
) -> TuneSummary:
    """Tune ``model``'s kernels into the database folder ``db`` (created if missing).

    ``rpc`` is ``HOST:PORT[:KEY]`` of a TVM RPC server on the target device (required when the
    target is not this machine's architecture). ``threads`` is the thread count kernels are
    measured with (default: every physical core). ``tracker`` (``HOST:PORT``) with ``key`` measures
    on every device registered under ``key`` at that TVM RPC tracker instead (tuning/farm.py): one
    measurement in flight per device, each bounded by ``measure_timeout`` seconds, a measurement
    whose device dies or hangs retried on another. ``parallel`` is how many candidates are built
    at once here (default: every core). ``all_kernels`` also tunes the kernels no
    slimtvm template covers (pooling, element-wise, layout changes) in MetaSchedule's generic
    space; by default they keep their default schedules. ``sparse_timer``
    (slimtvm.compiler.layer_timing.conv_timer, which the caller builds: tuning sits below the
    compiler) makes the sparse/dense choice as ``compile`` does, so that the convs it times near
    the table's thresholds are tuned in the form compile will build; without one, the table's
    choice. ``conv_algorithm``: as ``compile``'s (``direct``: the kernels of a build without
    Winograd). Refuses: an unknown ``conv_algorithm``, a non-positive budget, a database
    for another target or damaged, a cross target without ``rpc`` or ``tracker``, both of them, a
    tracker without ``key`` or without a device under it, a model with no tunable kernel.
    """
    if trials < 1:
        raise SlimError(f"--trials must be at least 1, got {trials}")
    if trials_per_round < 1:
        raise SlimError(f"trials per round must be at least 1, got {trials_per_round}")
    if conv_algorithm not in CONV_ALGORITHMS:
        raise SlimError(f"conv algorithm {conv_algorithm!r}: use one of {', '.join(CONV_ALGORITHMS)}")
    spec = resolve_target(target)
    from ..targets.presets import host_arch
    from .rpc import parse_rpc_address

    if rpc and tracker:
        raise SlimError("give either --rpc (one device) or --tracker (a farm), not both")
    if key and not tracker:
        raise SlimError("--key names the devices at a tracker: give --tracker HOST:PORT with it")
    address = parse_rpc_address(rpc) if rpc else None
    farm = parse_tracker_address(tracker, key) if tracker else None
    if farm is not None:
        check_farm(farm)  # a wrong address fails before the model is prepared
    if address is None and farm is None and spec.arch != host_arch():
        raise SlimError(
            f"target {spec.name} ({spec.arch}) cannot be measured on this {host_arch()} machine: give --rpc HOST:PORT of a device or --tracker HOST:PORT --key KEY of a farm"
        )
    parallel = (os.cpu_count() or 1) if parallel is None else parallel
    if parallel < 1:
        raise SlimError(f"--parallel must be at least 1, got {parallel}")
    measure_timeout = DEFAULT_MEASURE_TIMEOUT_SECONDS if measure_timeout is None else measure_timeout
    if measure_timeout <= 0:
        raise SlimError(f"--measure-timeout must be positive, got {measure_timeout}")
    tasks = extract_tuning_tasks(model, spec, input_shapes, all_kernels, sparse_timer, conv_algorithm)
    if not tasks:
        from ..schedules.registry import describe_families

        raise SlimError(f"the model has no kernel slimtvm can tune (none of: {describe_families(tunable_only=True)})")
    database = open_database(os.fspath(db), spec, create=True)
    try:
        started = time.perf_counter()
        with _measuring_threads(threads), tempfile.TemporaryDirectory(prefix="slimtvm-tune-") as scratch:
            builder, runner = _builder_and_runner(spec, address, farm, parallel, measure_timeout, scratch)
            summary = TuneSummary(database.path, tasks, database.record_count, 0, 0.0)
            summary.default_seconds = _measure_defaults(tasks, spec, database, builder, runner)
            done = sum(_records_for(database, t) for t in tasks)
            remaining = trials - done
            if remaining > 0:
                devices = runner.status_text if farm else None
                summary.trials_run = _search(
                    tasks, spec, database, builder, runner, remaining, trials_per_round, scratch, progress, seed, done, trials, devices
                )
            summary.retried = getattr(runner, "retries", 0)
        summary.best_seconds = {t.name: _best_seconds(database, t) for t in tasks}
        summary.seconds = time.perf_counter() - started
    finally:
        database.close()
    return summary


@contextlib.contextmanager
def _measuring_threads(threads: int | None):
    """Measurement workers inherit TVM_NUM_THREADS from this process's environment."""
    if threads is None:
        yield
        return
    if threads < 1:
        raise SlimError(f"--threads must be at least 1, got {threads}")
    previous = os.environ.get("TVM_NUM_THREADS")
    os.environ["TVM_NUM_THREADS"] = str(threads)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("TVM_NUM_THREADS", None)
        else:
            os.environ["TVM_NUM_THREADS"] = previous


def _builder_and_runner(spec, address, farm, parallel, measure_timeout, scratch: str):
    """The builder and runner for the run; built kernels go to ``scratch`` (removed by the caller)."""
    from tvm.s_tir import meta_schedule as ms

    # Caches are flushed before each measured run, because inside a model every layer meets its
    # weights cold (ResNet-18 has 45 MB of them). On ResNet-18 this tuned to 1.07x onnxruntime
    # against 1.08x with warm caches (400 trials each): no worse, and closer to how kernels run.
    evaluator = ms.runner.EvaluatorConfig(number=1, repeat=10, min_repeat_ms=0, enable_cpu_cache_flush=True)
    if farm is not None:
        return farm_builder_and_runner(spec, farm, evaluator, parallel, measure_timeout, scratch)
    if address is None:
        from .kernel_build import build_kernel, export_kernel

        builder = ms.builder.LocalBuilder(max_workers=parallel, f_build=build_kernel, f_export=functools.partial(export_kernel, None, scratch))
        runner = ms.runner.LocalRunner(timeout_sec=60, evaluator_config=evaluator)
        return builder, runner
    from .rpc import remote_builder_and_runner

    return remote_builder_and_runner(spec, address, evaluator, scratch, parallel)


def _records_for(database, task) -> int:
    db = database.database
    if not db.has_workload(task.mod):
        return 0
    return len(db.get_top_k(db.commit_workload(task.mod), 1_000_000))


def _best_seconds(database, task) -> float | None:
    db = database.database
    if not db.has_workload(task.mod):
        return None
    top = db.get_top_k(db.commit_workload(task.mod), 1)
    if not top or not top[0].run_secs:
        return None
    return _mean_seconds(top[0].run_secs)


def _mean_seconds(run_secs) -> float:
    values = [float(v) for v in run_secs]
    return sum(values) / len(values)


def _measure_defaults(tasks, spec, database, builder, runner) -> dict:
    """Measure and commit each task's default schedule, unless the database has records for it."""
    from tvm import s_tir
    from tvm.s_tir import meta_schedule as ms

    from ..schedules.registry import default_rules
    from ..targets.kernel_target import KernelTarget

    target = spec.tvm_target()
    rules = default_rules(KernelTarget.of(target).lanes)
    measured = {}
    pending = []
    for task in tasks:
        if _records_for(database, task):
            continue
        sch = s_tir.Schedule(task.mod)
        for rule in rules:
            scheduled = rule.schedule(s_tir.Schedule(task.mod))
            if scheduled is not None:
                sch = scheduled
                break
        pending.append((task, sch))
    if not pending:
        return measured
    builds = builder.build([ms.builder.BuilderInput(sch.mod, target) for _, sch in pending])
    inputs, kept = [], []
    for (task, sch), built in zip(pending, builds):
        if built.error_msg:
            raise SlimError(f"building the default schedule of {task.name} failed: {_last_line(built.error_msg)}")
        inputs.append(ms.runner.RunnerInput(built.artifact_path, "cpu", ms.arg_info.ArgInfo.from_prim_func(sch.mod["main"])))
        kept.append((task, sch))
    futures = runner.run(inputs)
    for (task, sch), future in zip(kept, futures):
        result = future.result()
        if result.error_msg:
            raise SlimError(f"measuring the default schedule of {task.name} failed: {_last_line(result.error_msg)}")
        run_secs = [float(v) for v in result.run_secs]
        workload = database.database.commit_workload(task.mod)
        record = ms.database.TuningRecord(sch.trace, workload, run_secs, target, ms.arg_info.ArgInfo.from_prim_func(sch.mod["main"]))
        database.database.commit_tuning_record(record)
        measured[task.name] = _mean_seconds(run_secs)
    return measured


def _search(tasks, spec, database, builder, runner, remaining, per_round, scratch, progress, seed, done, total, devices=None) -> int:
    """MetaSchedule's evolutionary search over the templates, ``remaining`` trials in all."""
    from tvm.s_tir import meta_schedule as ms

    from ..schedules.registry import design_spaces
    from ..targets.kernel_target import KernelTarget
    from .progress import ProgressCallback

    target = spec.tvm_target()
    lanes = KernelTarget.of(target).lanes
    contexts = []
    for index, task in enumerate(tasks):
        if task.kind == "generic":  # no slimtvm template: MetaSchedule's own rules for the target
            space = ms.space_generator.PostOrderApply()
        else:
            space = ms.space_generator.ScheduleFn(
                lambda sch: design_spaces(sch, lanes),
                sch_rules=[],
                postprocs=[ms.postproc.DisallowDynamicLoop(), ms.postproc.RewriteParallelVectorizeUnroll()],
                mutator_probs={},
            )
        strategy = ms.search_strategy.EvolutionarySearch(population_size=64, init_min_unmeasured=32, genetic_num_iters=1, eps_greedy=0.25)
        contexts.append(
            ms.TuneContext(
                mod=task.mod,
                target=target,
                space_generator=space,
                search_strategy=strategy,
                task_name=task.name,
                rand_state=-1 if seed is None else seed + index,
                num_threads="physical",
            )
        )
    callback = ProgressCallback(tasks, remaining, done, total, enabled=progress, devices=devices)
    callback.best.update({t.name: best for t in tasks if (best := _best_seconds(database, t)) is not None})
    callbacks = ms.measure_callback.MeasureCallback.create("default") + [callback]
    try:
        ms.tune_tasks(
            tasks=contexts,
            task_weights=[float(t.weight) for t in tasks],
            work_dir=scratch,
            max_trials_global=remaining,
            num_trials_per_iter=per_round,
            builder=builder,
            runner=runner,
            database=database.database,
            cost_model=ms.cost_model.XGBModel(num_warmup_samples=min(8, per_round)),
            measure_callbacks=callbacks,
            task_scheduler="gradient",
        )
    except Exception:
        reason = getattr(runner, "stop_reason", None)  # the farm runner's refusal, lost in TVM's C++ loop
        if reason:
            raise SlimError(reason) from None
        raise
    finally:
        callback.close()
    return callback.measured


def _last_line(message: str) -> str:
    """MetaSchedule's worker errors end with the exception; the first line is only a heading."""
    lines = [line for line in str(message).strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "unknown error"
