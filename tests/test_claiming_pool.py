"""slimtvm's thread pool (runtime/claiming_pool.c): artifacts run on it, and stay exact however
its threads are scheduled — more threads than cores, concurrent callers, a forked child, another
process on a core. Reference: onnxruntime on the same ONNX model. (How fast: benchmarks/busy_core.py.)"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import subprocess
import sys
import threading

import numpy as np
import pytest
from conftest import assert_outputs_match, onnxruntime_outputs

import slimtvm
from slimtvm.runtime import claiming_pool
from slimtvm.runtime.artifact import set_num_threads

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS_CNN = os.path.join(REPO, "examples", "digits_cnn.onnx")


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """(loaded digits CNN, its inputs, onnxruntime's outputs); the suite's thread count after."""
    artifact = slimtvm.compile(DIGITS_CNN, str(tmp_path_factory.mktemp("pool") / "digits.so"))
    model = artifact.load()
    inputs = model.random_inputs(seed=3)
    yield model, inputs, onnxruntime_outputs(DIGITS_CNN, inputs)
    set_num_threads(int(os.environ["TVM_NUM_THREADS"]))


def launch_pointer(library_path: str) -> int:
    library = ctypes.CDLL(library_path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
    return ctypes.c_void_p.in_dll(library, "__TVMBackendParallelLaunch").value


def test_loaded_artifacts_launch_their_parallel_loops_on_slimtvms_pool(digits):
    model, inputs, expected = digits
    assert model.claiming_pool
    library = ctypes.CDLL(model.library_path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
    assert hasattr(library, "slimtvm_parallel_launch")
    assert claiming_pool.launch_address() is not None
    assert launch_pointer(model.library_path) == claiming_pool.launch_address()  # not TVM's pool
    for threads in (1, 2, 1, 2):
        set_num_threads(threads)
        assert claiming_pool.pool_threads() == threads
        assert_outputs_match(model.run(inputs), expected)


def test_use_tvm_pool_restores_the_launch_tvms_loader_set(digits):
    model, inputs, expected = digits
    ours = launch_pointer(model.library_path)
    try:
        assert claiming_pool.use_tvm_pool(model.library_path)
        assert launch_pointer(model.library_path) != ours
        set_num_threads(2)
        assert_outputs_match(model.run(inputs), expected)
    finally:
        assert claiming_pool.attach(model.library_path)
    assert launch_pointer(model.library_path) == ours


def test_more_threads_than_cores(digits):
    """16 threads on this machine's cores: most workers are off a core at any moment, and the
    tasks they would have run are claimed by the threads that are on one."""
    model, inputs, expected = digits
    set_num_threads(16)
    try:
        for _ in range(20):
            assert_outputs_match(model.run(inputs), expected)
    finally:
        set_num_threads(2)


def test_concurrent_callers_each_get_their_own_outputs(digits):
    """Four Python threads run the artifact at once, each on its own loaded copy (its own
    VirtualMachine): one runs on the pool at a time, the others' parallel loops on their own
    thread (the pool takes one caller at a time); a fifth shares one copy with a sixth (turns)."""
    model, _, _ = digits
    set_num_threads(2)
    rng = np.random.default_rng(9)
    cases = [{name: rng.standard_normal(value.shape).astype(value.dtype) for name, value in model.random_inputs().items()} for _ in range(6)]
    expected = [onnxruntime_outputs(DIGITS_CNN, case) for case in cases]
    copies = [slimtvm.load(model.library_path) for _ in range(4)] + [model, model]
    failures = []

    def caller(index):
        try:
            for _ in range(30):
                assert_outputs_match(copies[index].run(cases[index]), expected[index])
        except Exception as err:  # noqa: BLE001 - reported by the main thread
            failures.append(err)

    threads = [threading.Thread(target=caller, args=(index,)) for index in range(len(cases))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not any(thread.is_alive() for thread in threads)
    assert not failures, repr(failures[0])


def _run_in_child(model, inputs, queue):
    queue.put(next(iter(model.run(inputs).values())))


def test_a_forked_child_runs_without_the_parents_workers(digits):
    model, inputs, expected = digits
    set_num_threads(2)
    model.run(inputs)  # the parent's workers exist now
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_run_in_child, args=(model, inputs, queue))
    child.start()
    output = queue.get(timeout=120)
    child.join(timeout=60)
    assert child.exitcode == 0
    assert_outputs_match({next(iter(expected)): output}, expected)


def test_another_process_on_a_core(digits):
    """A process spinning on one of this process's CPUs (ended by its PID): still exact."""
    model, inputs, expected = digits
    cpus = sorted(os.sched_getaffinity(0))
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        os.sched_setaffinity(busy.pid, {cpus[-1]})
        set_num_threads(max(2, len(cpus)))
        for _ in range(20):
            assert_outputs_match(model.run(inputs), expected)
    finally:
        busy.kill()
        busy.wait()
        set_num_threads(2)


def test_thread_pool_tvm_keeps_tvms_pool(digits):
    """``SLIMTVM_THREAD_POOL=tvm``: the artifact runs on TVM's pool."""
    model, _, _ = digits
    code = "import sys, slimtvm; m = slimtvm.load(sys.argv[1]); m.run(m.random_inputs()); print(m.claiming_pool)"
    env = dict(os.environ, SLIMTVM_THREAD_POOL="tvm", TVM_NUM_THREADS="2")
    proc = subprocess.run([sys.executable, "-c", code, model.library_path], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["False"]


def test_the_pool_compiles_without_warnings(tmp_path):
    """The C source is clean under -Wall -Wextra for the host compiler (the cross one compiles it
    in tests/test_aarch64.py's artifacts)."""
    from tvm.support import cc

    proc = subprocess.run(
        [cc.get_cc(), *claiming_pool.C_FLAGS, "-Wall", "-Wextra", "-Werror", claiming_pool.SOURCE, "-o", str(tmp_path / "pool.o")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("preset,expected", [(None, "2000"), ("50000", "50000")])
def test_import_shortens_tvms_pool_spin_unless_set(preset, expected):
    """TVM's own pool (pinned workers spinning ~150 ms after each loop by default) would share
    cores with slimtvm's workers: ``import slimtvm`` sets TVM_THREAD_POOL_SPIN_COUNT, unless
    the environment already does."""
    env = {key: value for key, value in os.environ.items() if key != "TVM_THREAD_POOL_SPIN_COUNT"}
    if preset is not None:
        env["TVM_THREAD_POOL_SPIN_COUNT"] = preset
    code = "import os, slimtvm; print(os.environ['TVM_THREAD_POOL_SPIN_COUNT'])"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == [expected]


def test_bench_names_the_thread_pool(digits):
    """`slimtvm bench` at several threads says whose pool ran the model."""
    from slimtvm.runtime.bench import bench

    model, _, _ = digits
    result = bench(model, DIGITS_CNN, threads=2, runs=3)
    assert result.outputs_agree
    assert result.lines()[0].endswith("2 threads, slimtvm's thread pool)"), result.lines()[0]
    assert bench(model, DIGITS_CNN, threads=1, runs=3).lines()[0].endswith("1 thread)")
