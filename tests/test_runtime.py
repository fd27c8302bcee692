"""The artifact on disk: manifest contents, integrity and architecture checks, reloading."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import onnxruntime_outputs
from onnx_builders import GraphBuilder

import slimtvm
from slimtvm.runtime.manifest import elf_architecture, sha256_of_file


def tiny_model(seed):
    g = GraphBuilder(seed)
    x = g.input([1, 3, 6, 6])
    return g.model(g.gemm(g.node("Flatten", [g.relu(g.conv(x, 3, 2, pads=(1, 1, 1, 1)))]), 72, 4))


def test_manifest_describes_the_library(tmp_path):
    artifact = slimtvm.compile(tiny_model(0), str(tmp_path / "m.so"))
    manifest = json.load(open(tmp_path / "m.json"))
    assert manifest == json.loads(json.dumps(artifact.manifest))
    assert manifest["library"]["sha256"] == sha256_of_file(str(tmp_path / "m.so"))
    assert manifest["inputs"] == [{"name": "x", "shape": [1, 3, 6, 6], "dtype": "float32"}]
    assert manifest["outputs"][0]["shape"] == [1, 4]
    assert manifest["tvm_version"] == "0.27.0.post1"
    assert manifest["target"]["arch"] == elf_architecture(str(tmp_path / "m.so"))
    assert manifest["passes"][0]["name"] == "fold_batchnorm"
    assert not [name for name in __import__("os").listdir(tmp_path) if name.endswith(".tmp")]


def test_load_refuses_a_modified_library(tmp_path):
    slimtvm.compile(tiny_model(0), str(tmp_path / "m.so"))
    with open(tmp_path / "m.so", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(slimtvm.SlimError, match="does not match its manifest"):
        slimtvm.load(str(tmp_path / "m.so"))


def test_load_refuses_a_library_without_manifest(tmp_path):
    slimtvm.compile(tiny_model(0), str(tmp_path / "m.so"))
    shutil.copy(tmp_path / "m.so", tmp_path / "lonely.so")
    with pytest.raises(slimtvm.SlimError, match="manifest .*lonely.json not found"):
        slimtvm.load(str(tmp_path / "lonely.so"))


def test_load_refuses_another_architecture(tmp_path):
    slimtvm.compile(tiny_model(0), str(tmp_path / "arm.so"), target="aarch64")
    assert elf_architecture(str(tmp_path / "arm.so")) == "aarch64"
    with pytest.raises(slimtvm.SlimError, match="built for aarch64; this machine is x86_64"):
        slimtvm.load(str(tmp_path / "arm.so"))


def test_recompiling_to_the_same_path_runs_the_new_model(tmp_path):
    """dlopen caches by path; a recompiled artifact must still run its own code."""
    x = {"x": np.random.default_rng(0).standard_normal((1, 3, 6, 6)).astype(np.float32)}
    for seed in (0, 1, 0, 2, 1, 2):
        model = tiny_model(seed)
        outputs = slimtvm.compile(model, str(tmp_path / "same.so")).load().run(x)
        expected = onnxruntime_outputs(model, x)
        name = next(iter(expected))
        np.testing.assert_allclose(outputs[name], expected[name], rtol=1e-4, atol=1e-5)


def test_compile_without_output_path_uses_a_temporary_folder():
    artifact = slimtvm.compile(tiny_model(3))
    assert artifact.library_path.endswith("model.so")
    x = {"x": np.ones((1, 3, 6, 6), np.float32)}
    assert artifact.load().run(x)[artifact.manifest["outputs"][0]["name"]].shape == (1, 4)


def test_setting_threads_keeps_the_callers_cpu_set():
    """TVM pins the calling thread when it builds its pool; slimtvm must hand the CPU set back,
    or every thread the application creates afterwards shares one core."""
    import os

    from slimtvm.runtime.artifact import set_num_threads

    before = os.sched_getaffinity(0)
    set_num_threads(len(before))
    assert os.sched_getaffinity(0) == before
    set_num_threads(1)
    assert os.sched_getaffinity(0) == before
    set_num_threads(int(os.environ["TVM_NUM_THREADS"]))  # the suite's default, for the tests after this one


def test_engines_take_turns_after_a_pause_and_a_timed_warm_up(monkeypatch):
    """``time_in_turns`` (every side-by-side benchmark): before each engine's block it pauses
    (the other engine's idle workers spin for a while after their last run: TVM's 114 ms on the
    Zen 5 VM) and drops runs for at least ``WARM_SECONDS`` (the ramp after a pause), then times
    ``block`` runs; each engine gets ``runs`` timings."""
    import time

    from slimtvm.runtime import bench

    events = []
    monkeypatch.setattr(bench.time, "sleep", lambda seconds: events.append(("pause", seconds, time.perf_counter())))

    def engine(name):
        return lambda: events.append((name, None, time.perf_counter()))

    medians, runs = bench.time_in_turns([engine("a"), engine("b")], runs=10, block=5, settle_seconds=0.3)
    assert runs == 10 and len(medians) == 2
    pauses = [index for index, event in enumerate(events) if event[0] == "pause"]
    assert len(pauses) == 4 and all(events[index][1] == 0.3 for index in pauses)
    for start, end in zip(pauses, pauses[1:] + [len(events)]):
        calls = events[start + 1 : end]
        assert len({name for name, _, _ in calls}) == 1  # one engine per block
        warm_up, timed = calls[:-5], calls[-5:]
        assert timed[0][2] - warm_up[0][2] >= bench.WARM_SECONDS
    assert sum(name == "a" for name, _, _ in events) > 10 and sum(name == "b" for name, _, _ in events) > 10
    assert [events[index + 1][0] for index in pauses] == ["a", "b", "b", "a"]  # each turn starts with the next engine

    # Alone (benchmarks/many_core.py): one block of every run per engine, after a longer warm-up.
    events.clear()
    medians, runs = bench.time_in_turns([engine("a"), engine("b")], runs=10, block=10, warm_seconds=0.05)
    pauses = [index for index, event in enumerate(events) if event[0] == "pause"]
    assert runs == 10 and len(pauses) == 2
    for start, end in zip(pauses, pauses[1:] + [len(events)]):
        calls = events[start + 1 : end]
        assert len({name for name, _, _ in calls}) == 1 and calls[-10][2] - calls[0][2] >= 0.05


def test_a_model_with_scalar_inputs_runs(tmp_path):
    """0-d inputs (Clip's min and max given as graph inputs) reach the library as 0-d tensors."""
    from conftest import assert_outputs_match, onnxruntime_outputs
    from onnx import TensorProto, helper

    inputs_info = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])] + [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, []) for n in ("lo", "hi")
    ]
    graph = helper.make_graph(
        [helper.make_node("Clip", ["x", "lo", "hi"], ["y"])], "clip", inputs_info, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    inputs = {"x": np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32), "lo": np.array(-0.5, np.float32), "hi": np.array(0.5, np.float32)}
    outputs = slimtvm.compile(model, str(tmp_path / "clip.so")).load().run(inputs)
    assert_outputs_match(outputs, onnxruntime_outputs(model, inputs))


def test_outputs_are_not_overwritten_by_the_next_run(tmp_path):
    """Outputs come back without a copy (DLPack): each run's arrays must stay as they were, and
    match onnxruntime, after later runs with other inputs."""
    g = GraphBuilder(seed=8)
    x = g.input([1, 8, 6, 6])
    model = g.model([g.relu(g.conv(x, 8, 16, pads=(1, 1, 1, 1))), g.node("Sigmoid", [x])])
    runner = slimtvm.compile(model, str(tmp_path / "model.so")).load()
    inputs = [{"x": np.random.default_rng(seed).standard_normal((1, 8, 6, 6)).astype(np.float32)} for seed in range(3)]
    results = [runner.run(feed) for feed in inputs]
    for feed, result in zip(inputs, results):
        expected = onnxruntime_outputs(model, feed)
        for name, value in expected.items():
            np.testing.assert_allclose(result[name], value, rtol=1e-4, atol=1e-5)


def test_aligned_and_unaligned_inputs_give_the_same_answer_and_are_left_alone(tmp_path):
    """An aligned input goes to the library without a copy, any other through a reused staging
    buffer; both must match onnxruntime, leave the caller's array unchanged, and later runs must
    not change earlier results."""
    g = GraphBuilder(seed=9)
    x = g.input([1, 16, 10, 10])
    model = g.model([g.relu(g.conv(x, 16, 16, pads=(1, 1, 1, 1)))])
    runner = slimtvm.compile(model, str(tmp_path / "model.so")).load()
    rng = np.random.default_rng(1)
    values = [rng.standard_normal((1, 16, 10, 10)).astype(np.float32) for _ in range(3)]
    aligned = slimtvm.aligned_array((1, 16, 10, 10), np.float32)
    aligned[...] = values[0]
    assert aligned.ctypes.data % 64 == 0
    unaligned_storage = np.empty(1 + values[1].size, np.float32)
    unaligned = unaligned_storage[1:].reshape(values[1].shape)  # 4 bytes past an allocation: never 64-aligned
    assert unaligned.ctypes.data % 64 != 0
    unaligned[...] = values[1]
    readonly = slimtvm.aligned_array((1, 16, 10, 10), np.float32)
    readonly[...] = values[2]
    readonly.flags.writeable = False  # DLPack cannot export it: copied like an unaligned array
    feeds = [aligned, unaligned, readonly]
    results = [runner.run({"x": feed}) for feed in feeds]
    for feed, value, result in zip(feeds, values, results):
        np.testing.assert_array_equal(feed, value)
        for name, expected in onnxruntime_outputs(model, {"x": value}).items():
            np.testing.assert_allclose(result[name], expected, rtol=1e-4, atol=1e-5)


def test_an_output_that_is_an_input_is_a_copy(tmp_path):
    """A graph that returns its input: the result must not alias the caller's array (or the
    staging buffer the next run overwrites)."""
    from onnx import TensorProto, helper

    info = helper.make_tensor_value_info
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "passthrough",
        [info("x", TensorProto.FLOAT, [4, 16])],
        [info("y", TensorProto.FLOAT, [4, 16]), info("x", TensorProto.FLOAT, [4, 16])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    runner = slimtvm.compile(model, str(tmp_path / "model.so")).load()
    for make in (lambda: slimtvm.aligned_array((4, 16)), lambda: np.empty((4, 16), np.float32)):
        first, second = make(), make()
        first[...], second[...] = 1.0, 2.0
        result = runner.run({"x": first})
        runner.run({"x": second})
        first[...] = 3.0
        np.testing.assert_array_equal(result["x"], 1.0)
