"""`slimtvm tune` and `compile --db`: tunable templates, MetaSchedule runs, the database's safety.

Timings are never asserted (shared, noisy machines): these tests check that tuned schedules
compute the right answer, that a killed run loses nothing, and that bad databases are refused.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx
import pytest
from conftest import assert_outputs_match, fails_cleanly, onnxruntime_outputs, x86_kernel_presets
from onnx_builders import GraphBuilder

import slimtvm
from slimtvm.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = os.path.join(REPO, "examples", "digits_cnn.onnx")
RECORDS = "database_tuning_record.json"


def template_models():
    """Small graphs whose kernels cover each template: odd widths, strides, 1x1, 7x7/2, depthwise,
    channel counts of 3 and 5 blocks, dense with one and two rows; grouped 1×1 convs whose groups
    fill no channel block (banded)."""
    models = []
    g = GraphBuilder(seed=31)
    x = g.input([1, 8, 13, 11])
    y = g.relu(g.conv(x, 8, 24, kernel=3, pads=(1, 1, 1, 1)))
    y = g.conv(y, 24, 24, kernel=3, pads=(1, 1, 1, 1), groups=24)
    y = g.relu(g.conv(y, 24, 40, kernel=1, stride=2))
    models.append(g.model(g.gemm(g.node("Flatten", [y]), 40 * 7 * 6, 24)))
    g = GraphBuilder(seed=32)
    x = g.input([2, 16, 19, 19])
    y = g.conv(x, 16, 16, kernel=7, stride=2, pads=(3, 3, 3, 3))
    y = g.conv(y, 16, 16, kernel=3, stride=2, pads=(1, 1, 1, 1), groups=16)
    models.append(g.model(g.gemm(g.node("Flatten", [y]), 16 * 5 * 5, 10)))
    g = GraphBuilder(seed=33)
    x = g.input([1, 136, 14, 14])
    y = g.relu(g.conv(x, 136, 136, kernel=1, groups=4))
    y = g.conv(y, 136, 136, kernel=3, pads=(1, 1, 1, 1), groups=136)
    models.append(g.model(g.conv(y, 136, 272, kernel=1, groups=4)))
    g = GraphBuilder(seed=34)  # tokens: the GEMM form, with batch axes and a partial tile of rows
    x = g.input([1, 21, 32])
    y = g.node("MatMul", [x, g.const(g.rng.standard_normal((32, 48)), "w")])
    heads = g.node("Transpose", [g.node("Reshape", [y, g.const(np.array([1, 21, 3, 16]), "shape", np.int64)])], perm=[0, 2, 1, 3])
    scores = g.node("MatMul", [heads, g.node("Transpose", [heads], perm=[0, 1, 3, 2])])
    prompt = g.input([1, 21, 256], name="prompt")  # few rows, wide: the row-panel space, sampled reduction blocks
    wide = g.node("MatMul", [prompt, g.const(g.rng.standard_normal((256, 512)) / 16, "w_wide")])
    models.append(g.model([g.node("MatMul", [g.node("Softmax", [scores], axis=-1), heads]), wide]))
    return models


TEMPLATE_KINDS = ({"conv2d", "depthwise", "dense"}, {"conv2d", "depthwise", "dense"}, {"banded_conv2d", "depthwise"}, {"dense"})


def random_input(model, seed):
    generator = np.random.default_rng(seed)
    inputs = {}
    for value in model.graph.input:
        shape = [d.dim_value for d in value.type.tensor_type.shape.dim]
        inputs[value.name] = generator.standard_normal(shape).astype(np.float32)
    return inputs


@pytest.mark.parametrize("preset", x86_kernel_presets())
@pytest.mark.parametrize("model_index", [0, 1, 2, 3])
def test_every_sampled_template_schedule_computes_the_same_result(model_index, preset):
    """Random decisions of every design space, built and run, against the unscheduled kernel,
    for every x86 kernel variant this host executes (on AVX-512, 8-channel convs take 8-blocks)."""
    import tvm
    from tvm import s_tir
    from tvm.s_tir import meta_schedule as ms

    from slimtvm.schedules.registry import design_spaces
    from slimtvm.targets.presets import resolve_target, simd_lanes
    from slimtvm.tuning.tune import extract_tuning_tasks

    spec = resolve_target(preset)
    target = spec.tvm_target()
    tasks = extract_tuning_tasks(template_models()[model_index], spec)
    # the AVX2 build also takes its 8-channel 3×3 convs to Winograd (8-lane blocks)
    assert TEMPLATE_KINDS[model_index] <= {t.kind for t in tasks} <= {"conv2d", "depthwise", "dense", "winograd_conv2d", "banded_conv2d"}
    checked = 0
    for task in tasks:
        infos = ms.arg_info.ArgInfo.from_prim_func(task.mod["main"])
        args = [np.random.default_rng(seed).uniform(-1, 1, size=[int(d) for d in info.shape]).astype(str(info.dtype)) for seed, info in enumerate(infos)]
        reference = _run(tvm.compile(task.mod, target=target), args)
        seen = set()
        for seed in range(4):
            for space in design_spaces(s_tir.Schedule(task.mod, seed=seed + 1), simd_lanes(target)):
                if str(space.trace) in seen:
                    continue  # a space without sampled decisions (one per conv tile) comes out the same for every seed
                seen.add(str(space.trace))
                out = _run(tvm.compile(space.mod, target=target), args)
                np.testing.assert_allclose(out, reference, rtol=1e-5, atol=1e-5 * np.abs(reference).max(), err_msg=f"{task.name}: {space.trace}")
                checked += 1
    assert checked >= 2 * len(tasks)


def test_conv_template_has_design_spaces_for_a_one_pixel_output():
    """A conv whose output is 1×1 (fewer pixels than half a tile) still gets its tile spaces:
    densenet121's tuning once found none and MetaSchedule stopped."""
    from tvm import s_tir

    from slimtvm.schedules.registry import design_spaces
    from slimtvm.targets.presets import resolve_target, simd_lanes
    from slimtvm.tuning.tune import extract_tuning_tasks

    g = GraphBuilder(seed=5)
    x = g.input([1, 16, 3, 3])
    model = g.model(g.node("Flatten", [g.relu(g.conv(x, 16, 32, kernel=3))]))
    spec = resolve_target("host")
    (task,) = [t for t in extract_tuning_tasks(model, spec) if t.kind == "conv2d"]
    spaces = design_spaces(s_tir.Schedule(task.mod), simd_lanes(spec.tvm_target()))
    assert len(spaces) >= 2  # channel-block tiles × the two loop orders, one pixel each


def test_tuning_builds_kernels_with_the_weight_prefetch_compile_adds(tmp_path):
    """A candidate is timed as the model runs it: the tuning builder inserts the weight prefetch
    the schedule annotates (lowering/weight_prefetch.py), as ``compile`` does. Without it, tuning
    timed the default Winograd conv of 256 channels at 14×14 without its prefetch and kept a
    candidate that ran twice as slow in the model."""
    from tvm import s_tir

    from slimtvm.schedules.registry import default_rules
    from slimtvm.targets.presets import resolve_target, simd_lanes
    from slimtvm.tuning.kernel_build import build_kernel, export_kernel
    from slimtvm.tuning.tune import extract_tuning_tasks

    if shutil.which("objdump") is None:
        pytest.skip("objdump is needed to read the built kernel")
    g = GraphBuilder(seed=41)
    x = g.input([1, 256, 14, 14])
    model = g.model(g.relu(g.conv(x, 256, 256, kernel=3, pads=(1, 1, 1, 1))))
    spec = resolve_target("x86-64-avx512")
    (task,) = extract_tuning_tasks(model, spec)
    assert task.kind == "winograd_conv2d"
    scheduled = next(s for s in (rule.schedule(s_tir.Schedule(task.mod)) for rule in default_rules(simd_lanes(spec.tvm_target()))) if s is not None)
    library = export_kernel(None, str(tmp_path), build_kernel(scheduled.mod, spec.tvm_target()))
    disassembly = subprocess.run(["objdump", "-d", library], capture_output=True, text=True, check=True).stdout
    assert "prefetcht0" in disassembly


def _run(executable, args):
    import tvm

    module = executable.jit() if hasattr(executable, "jit") else executable
    tensors = [tvm.runtime.tensor(a) for a in args]
    module["main"](*tensors)
    return tensors[-1].numpy()


@pytest.fixture(scope="module")
def tuned_digits(tmp_path_factory):
    """The digits CNN tuned with a small budget: 6 default schedules + about 8 searched; with the
    system temp folder (this process's and its builder workers') pointed at an empty folder, whose
    contents afterwards are returned too."""
    db = str(tmp_path_factory.mktemp("tune") / "db")
    system_temp = tmp_path_factory.mktemp("system-temp")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", str(system_temp))
        patch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
        summary = slimtvm.tune(DIGITS, db, trials=14, trials_per_round=4, progress=False, seed=3)
    return db, summary, sorted(os.listdir(system_temp))


def test_tune_measures_defaults_then_searches(tuned_digits):
    db, summary, _ = tuned_digits
    assert len(summary.tasks) == 6
    assert set(summary.default_seconds) == {t.name for t in summary.tasks}  # every default measured first
    assert summary.trials_run >= 14 - 6
    with open(os.path.join(db, RECORDS)) as handle:
        assert sum(1 for _ in handle) >= 14
    assert all(summary.best_seconds[task.name] > 0 for task in summary.tasks)


def test_a_tuning_run_leaves_nothing_in_the_system_temp_folder(tuned_digits):
    *_, left = tuned_digits
    assert left == []  # every built candidate went to the run's scratch folder, removed at the end


def test_compile_with_the_database_matches_onnxruntime(tuned_digits, tmp_path):
    db, summary, _ = tuned_digits
    artifact = slimtvm.compile(DIGITS, str(tmp_path / "tuned.so"), db=db)
    assert len(artifact.manifest["tuning"]["tuned_kernels"]) == len(summary.tasks)
    with np.load(os.path.join(REPO, "examples", "digits_test.npz")) as data:
        images = data["images"][:16]
    model = artifact.load()
    for image in images:
        inputs = {"image": image[None].astype(np.float32)}
        assert_outputs_match(model.run(inputs), onnxruntime_outputs(DIGITS, inputs))


def test_killed_tuning_run_resumes_without_losing_records(tmp_path, capsys):
    """SIGKILL a `slimtvm tune` part-way, resume it: every earlier record is still there, in order.
    While it runs, `compile --db` reads the database without changing it and a second tune is
    refused (one writer holds the lock)."""
    db = tmp_path / "db"
    command = [sys.executable, "-m", "slimtvm", "tune", DIGITS, "--db", str(db), "--trials", "200", "--trials-per-round", "2", "--seed", "5"]
    log = open(tmp_path / "tune.log", "wb")  # noqa: SIM115 - closed below, after the process ends
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    records = db / RECORDS
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and proc.poll() is None:
            if records.exists() and records.read_bytes().count(b"\n") >= 10:
                break
            time.sleep(0.5)
        assert proc.poll() is None, "the tuning run ended before it could be killed: " + (tmp_path / "tune.log").read_text()[-2000:]
        # while it runs: a compile reads what is there and changes nothing; a second tune is refused
        seen = records.read_bytes()
        artifact = slimtvm.compile(DIGITS, str(tmp_path / "during.so"), db=str(db))
        assert artifact.manifest["tuning"]["records"] >= seen.count(b"\n") and records.read_bytes().startswith(seen)
        fails_cleanly(["tune", DIGITS, "--db", str(db), "--trials", "300"], capsys, tmp_path, "is being written by another `slimtvm tune`")
        os.killpg(proc.pid, signal.SIGKILL)  # the run and its builder/runner workers: the group we started
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        log.close()
    before = records.read_bytes()
    complete = before[: before.rfind(b"\n") + 1]  # a torn last line is the one measurement in flight
    assert complete.count(b"\n") >= 10
    status = main(["tune", DIGITS, "--db", str(db), "--trials", str(complete.count(b"\n") + 4), "--trials-per-round", "2", "--seed", "6"])
    assert status == 0
    after = records.read_bytes()
    assert after.startswith(complete), "records measured before the kill were lost or changed"
    assert after.count(b"\n") >= complete.count(b"\n") + 4
    artifact = slimtvm.compile(DIGITS, str(tmp_path / "resumed.so"), db=str(db))
    assert artifact.manifest["tuning"]["records"] == after.count(b"\n")


def _copy_db(tuned_digits, tmp_path):
    db = tmp_path / "db"
    shutil.copytree(tuned_digits[0], db)
    return db


def test_a_torn_last_record_is_skipped_by_readers_and_cut_by_the_writer(tuned_digits, tmp_path):
    db = _copy_db(tuned_digits, tmp_path)
    records = db / RECORDS
    lines = records.read_bytes().count(b"\n")
    with open(records, "ab") as handle:
        handle.write(b'[0, {"trace": [[["GetSBlock"')  # what a kill in the middle of a write leaves
    torn = records.read_bytes()
    with pytest.warns(UserWarning, match="skipped an incomplete last tuning record"):
        artifact = slimtvm.compile(DIGITS, str(tmp_path / "m.so"), db=str(db))
    assert artifact.manifest["tuning"]["records"] == lines
    assert records.read_bytes() == torn  # a reader never modifies the database
    with pytest.warns(UserWarning, match="dropped an incomplete last tuning record"):
        slimtvm.tune(DIGITS, str(db), trials=lines, progress=False)  # nothing left to measure
    assert records.read_bytes() == torn[: torn.rfind(b"\n") + 1]


def test_a_damaged_record_is_refused(tuned_digits, tmp_path, capsys):
    db = _copy_db(tuned_digits, tmp_path)
    lines = (db / RECORDS).read_bytes().split(b"\n")
    lines[2] = b"this is not json"
    (db / RECORDS).write_bytes(b"\n".join(lines))
    fails_cleanly(["compile", DIGITS, "-o", str(tmp_path / "m.so"), "--db", str(db)], capsys, tmp_path, "line 3 is not valid JSON")


def test_a_database_for_another_target_is_refused(tuned_digits, tmp_path, capsys):
    db = _copy_db(tuned_digits, tmp_path)
    card = json.loads((db / "slimtvm-db.json").read_text())
    card["target"]["mcpu"] = "cortex-a72"
    (db / "slimtvm-db.json").write_text(json.dumps(card))
    fails_cleanly(["compile", DIGITS, "-o", str(tmp_path / "m.so"), "--db", str(db)], capsys, tmp_path, "was made for target")
    fails_cleanly(["tune", DIGITS, "--db", str(db), "--trials", "20"], capsys, tmp_path, "was made for target")


def test_a_folder_that_is_not_a_database_is_refused(tmp_path, capsys):
    folder = tmp_path / "stuff"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    fails_cleanly(["compile", DIGITS, "-o", str(tmp_path / "m.so"), "--db", str(folder)], capsys, tmp_path, "not a slimtvm tuning database")
    fails_cleanly(["tune", DIGITS, "--db", str(folder), "--trials", "20"], capsys, tmp_path, "not a slimtvm tuning database")
    fails_cleanly(["compile", DIGITS, "-o", str(tmp_path / "m.so"), "--db", str(tmp_path / "none")], capsys, tmp_path, "tuning database not found")


def test_tune_refuses_bad_options(tmp_path, capsys):
    fails_cleanly(["tune", DIGITS, "--db", str(tmp_path / "db"), "--trials", "0"], capsys, tmp_path, "--trials must be at least 1")
    fails_cleanly(["tune", DIGITS, "--db", str(tmp_path / "db"), "--trials", "5", "--rpc", "localhost"], capsys, tmp_path, "--rpc must be HOST:PORT")
    fails_cleanly(["tune", DIGITS, "--db", str(tmp_path / "db"), "--trials", "5", "--target", "aarch64"], capsys, tmp_path, "give --rpc")
    fails_cleanly(["tune", DIGITS, "--db", str(tmp_path / "db"), "--trials", "5", "--tracker", "127.0.0.1:9"], capsys, tmp_path, "--tracker needs --key")
    fails_cleanly(["tune", DIGITS, "--db", str(tmp_path / "db"), "--trials", "5", "--key", "k"], capsys, tmp_path, "give --tracker")
    fails_cleanly(
        ["tune", DIGITS, "--db", str(tmp_path / "db"), "--trials", "5", "--tracker", "nowhere", "--key", "k"], capsys, tmp_path, "--tracker must be HOST:PORT"
    )
    both = ["--tracker", "127.0.0.1:9", "--key", "k", "--rpc", "127.0.0.1:9"]
    fails_cleanly(["tune", DIGITS, "--db", str(tmp_path / "db"), "--trials", "5", *both], capsys, tmp_path, "not both")
    fails_cleanly(["tune", DIGITS, "--db", str(tmp_path / "db"), "--trials", "5", "--parallel", "0"], capsys, tmp_path, "--parallel must be at least 1")
    with socket.socket() as probe:  # a port nothing listens on: bound, never listening
        probe.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{probe.getsockname()[1]}"
        fails_cleanly(
            ["tune", DIGITS, "--db", str(tmp_path / "db"), "--trials", "5", "--tracker", closed, "--key", "k"],
            capsys,
            tmp_path,
            "cannot reach the TVM RPC tracker",
        )
    g = GraphBuilder(seed=1)
    path = tmp_path / "no_kernels.onnx"
    onnx.save(g.model(g.relu(g.input([1, 4]))), path)
    fails_cleanly(["tune", str(path), "--db", str(tmp_path / "db"), "--trials", "5"], capsys, tmp_path, "no kernel slimtvm can tune")


def test_sampled_binary_conv_templates_compute_the_same_result():
    """Random decisions of the binary conv template on the digits BNN's binary convs, against the
    default schedule. The popcount sums are exact; the fused float epilogue (scale, batch norm)
    may round differently (FMA)."""
    import tvm
    from tvm import s_tir
    from tvm.s_tir import meta_schedule as ms

    from slimtvm.schedules.binary_conv_schedule import BinaryConv
    from slimtvm.schedules.registry import design_spaces
    from slimtvm.targets.presets import resolve_target, simd_lanes
    from slimtvm.tuning.tune import extract_tuning_tasks

    spec = resolve_target("host")
    target = spec.tvm_target()
    tasks = [t for t in extract_tuning_tasks(os.path.join(REPO, "examples", "digits_bnn.onnx"), spec) if t.kind == "binary_conv2d"]
    assert len(tasks) >= 2
    for task in tasks:
        infos = ms.arg_info.ArgInfo.from_prim_func(task.mod["main"])
        rng = np.random.default_rng(0)
        args = [
            rng.integers(0, 256, size=[int(d) for d in info.shape]).astype(str(info.dtype))
            if "int" in str(info.dtype)
            else rng.standard_normal([int(d) for d in info.shape]).astype(str(info.dtype))
            for info in infos
        ]
        args = [a % 16 if a.ndim == 5 and a.dtype == np.uint8 else a for a in args]  # weight nibbles (AVX2 table form)
        # the reference is slimtvm's default schedule: the AVX2 table popcount only compiles vectorized
        reference = _run(tvm.compile(BinaryConv(simd_lanes(target)).schedule(s_tir.Schedule(task.mod)).mod, target=target), args)
        for seed in range(4):
            (space,) = design_spaces(s_tir.Schedule(task.mod, seed=seed + 1), simd_lanes(target))
            out = _run(tvm.compile(space.mod, target=target), args)
            np.testing.assert_allclose(out, reference, rtol=1e-6, atol=1e-6 * np.abs(reference).max(), err_msg=f"{task.name}: {space.trace}")


def test_a_tuned_banded_conv_matches_onnxruntime(tmp_path):
    """The banded family is tunable: its tasks get searched records, and the model compiled with
    them (trip counts set after the tuned schedule, as in the tuning builder) matches onnxruntime."""
    model = template_models()[2]
    path = str(tmp_path / "banded.onnx")
    onnx.save(model, path)
    db = str(tmp_path / "db")
    summary = slimtvm.tune(path, db, trials=10, trials_per_round=5, progress=False, seed=5)
    banded = [task for task in summary.tasks if task.kind == "banded_conv2d"]
    assert len(banded) == 2 and all(summary.best_seconds[task.name] > 0 for task in banded)
    assert summary.trials_run >= 10 - len(summary.tasks)
    inputs = random_input(model, seed=2)
    runner = slimtvm.compile(path, str(tmp_path / "banded.so"), db=db).load()
    assert_outputs_match(runner.run(inputs), onnxruntime_outputs(model, inputs))


def test_kernels_with_sigmoid_and_erf_epilogues_can_be_tuned(tmp_path):
    """A conv with a SiLU epilogue and a matmul with a GELU one (lowering/fast_math.py writes their
    exponential and erf with ``Let``, which MetaSchedule's flop estimate refused: every such tuning
    run stopped with "Do not have a default for prim.Let"): tuned, applied by compile, and the model
    matches onnxruntime."""
    g = GraphBuilder(seed=35)
    x = g.input([1, 16, 10, 10])
    y = g.conv(x, 16, 32, kernel=3, pads=(1, 1, 1, 1))
    y = g.node("Mul", [y, g.node("Sigmoid", [y])])
    y = g.node("Reshape", [y, g.const(np.array([1, 32, 100]), "shape", np.int64)])
    y = g.node("MatMul", [g.node("Transpose", [y], perm=[0, 2, 1]), g.const(g.rng.standard_normal((32, 48)) / 6, "w")])
    erf = g.node("Erf", [g.node("Div", [y, g.const(np.float32(np.sqrt(2.0)), "root2")])])
    model = g.model(g.node("Mul", [y, g.node("Add", [erf, g.const(np.float32(1.0), "one")])]))
    path = str(tmp_path / "epilogues.onnx")
    onnx.save(model, path)
    db = str(tmp_path / "db")
    summary = slimtvm.tune(path, db, trials=4, trials_per_round=2, progress=False, seed=7)
    assert {task.kind for task in summary.tasks} >= {"dense"} and all(summary.best_seconds.get(task.name, 0) > 0 for task in summary.tasks)
    artifact = slimtvm.compile(path, str(tmp_path / "tuned.so"), db=db)
    assert len(artifact.manifest["tuning"]["tuned_kernels"]) >= 1, artifact.manifest["tuning"]
    inputs = random_input(model, seed=3)
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))


@pytest.mark.parametrize("preset", x86_kernel_presets())
def test_conv_tiles_of_five_channel_blocks_are_searched_and_match_onnxruntime(preset):
    """EfficientNet's 480 → 80 1×1 conv at 14×14: on AVX-512 its 5 channel blocks, which only 5
    and 1 divide, get five-block tile spaces besides the one-block ones (its untuned tile is one
    block: five leave too few parallel chunks); on AVX2 (10 blocks) none. Every space, built and
    run, matches onnxruntime's Conv + Relu."""
    from tvm import s_tir

    from slimtvm.schedules.conv2d_nchwc import conv2d_design_spaces
    from slimtvm.targets.presets import resolve_target, simd_lanes
    from slimtvm.tuning.tune import extract_tuning_tasks

    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from conv_layers import conv_onnx, kernel_difference

    model = conv_onnx(480, 14, 1, 80, 1, 0)
    spec = resolve_target(preset)
    target = spec.tvm_target()
    (task,) = [t for t in extract_tuning_tasks(model, spec) if t.kind == "conv2d"]
    spaces = conv2d_design_spaces(s_tir.Schedule(task.mod), simd_lanes(target))
    # the schedule's first split is the one of the channel blocks
    five_blocks = [space for space in spaces if "factors=[None, 5]" in next(line for line in str(space.trace).splitlines() if "sch.split(" in line)]
    assert bool(five_blocks) == (simd_lanes(target) == 16), [str(space.trace) for space in spaces]
    for space in spaces:
        assert kernel_difference(space.mod, target, model, (1, 480, 14, 14)) <= 1e-4, str(space.trace)
