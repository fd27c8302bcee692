"""Bad input: one clear line naming the problem, exit status 2, and no output file left behind."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from conftest import fails_cleanly
from onnx import TensorProto, helper
from onnx_builders import GraphBuilder

from slimtvm.cli import main


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    g = GraphBuilder(seed=0)
    x = g.input([1, 2, 5, 5])
    model = g.model(g.relu(g.batchnorm(g.conv(x, 2, 3, pads=(1, 1, 1, 1)), 3)))
    path = tmp_path_factory.mktemp("model") / "small.onnx"
    onnx.save(model, path)
    return str(path)


@pytest.fixture(scope="module")
def small_artifact(small_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("artifact") / "small.so"
    assert main(["compile", small_model, "-o", str(out)]) == 0
    return str(out)


def test_missing_model_file(tmp_path, capsys):
    fails_cleanly(["compile", str(tmp_path / "nope.onnx"), "-o", str(tmp_path / "out.so")], capsys, tmp_path, "model file not found")


def test_truncated_model(small_model, tmp_path, capsys):
    data = open(small_model, "rb").read()
    bad = tmp_path / "truncated.onnx"
    bad.write_bytes(data[: len(data) // 2])
    fails_cleanly(["compile", str(bad), "-o", str(tmp_path / "out.so")], capsys, tmp_path, "truncated.onnx is not")


def test_not_an_onnx_file(tmp_path, capsys):
    bad = tmp_path / "notes.onnx"
    bad.write_text("these are notes, not a neural network\n" * 20)
    fails_cleanly(["compile", str(bad), "-o", str(tmp_path / "out.so")], capsys, tmp_path, "notes.onnx is not")


def test_operator_tvm_cannot_import(tmp_path, capsys):
    """Celu is valid ONNX and runs in onnxruntime, but TVM 0.27's ONNX frontend lacks it."""
    node = helper.make_node("Celu", ["x"], ["y"])
    graph = helper.make_graph(
        [node], "celu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])]
    )
    path = tmp_path / "celu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    fails_cleanly(["compile", str(path), "-o", str(tmp_path / "out.so")], capsys, tmp_path, "cannot import operator(s) Celu")


def test_dynamic_dimension_without_input_shape(tmp_path, capsys):
    g = GraphBuilder(seed=1)
    x = g.input(None, name="images", dims=["batch", 2, 5, 5])
    path = tmp_path / "dynamic.onnx"
    onnx.save(g.model(g.relu(g.conv(x, 2, 2))), path)
    line = fails_cleanly(["compile", str(path), "-o", str(tmp_path / "out.so")], capsys, tmp_path, "'images' has dynamic dimensions")
    assert "--input-shape images=N,2,5,5" in line
    # …and with the shape given, it compiles
    assert main(["compile", str(path), "-o", str(tmp_path / "out.so"), "--input-shape", "images=1,2,5,5"]) == 0


def test_input_shape_for_unknown_input(small_model, tmp_path, capsys):
    fails_cleanly(["compile", small_model, "-o", str(tmp_path / "out.so"), "--input-shape", "y=1,2,5,5"], capsys, tmp_path, "'y', which is not an input")


def test_malformed_input_shape(small_model, tmp_path, capsys):
    fails_cleanly(["compile", small_model, "-o", str(tmp_path / "out.so"), "--input-shape", "x=1,two"], capsys, tmp_path, "malformed")


def test_nan_weights_warn_but_compile(tmp_path, capsys):
    g = GraphBuilder(seed=2)
    x = g.input([1, 2, 4, 4])
    y = g.conv(x, 2, 2)
    model = g.model(y)
    weight = onnx.numpy_helper.to_array(model.graph.initializer[0]).copy()
    weight[0, 0, 0, 0] = np.nan
    weight[1, 0, 0, 0] = np.inf
    model.graph.initializer[0].CopyFrom(onnx.numpy_helper.from_array(weight, model.graph.initializer[0].name))
    path = tmp_path / "nan.onnx"
    onnx.save(model, path)
    status = main(["compile", str(path), "-o", str(tmp_path / "nan.so")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 0
    assert len(err) == 1 and err[0].startswith("slimtvm: warning: model weights contain NaN/Inf values: w1 (2)")
    assert "as in onnxruntime" in err[0]
    # what the warning says happens: the NaN and Inf outputs are where onnxruntime has them
    from conftest import onnxruntime_outputs

    import slimtvm

    inputs = {"x": np.random.default_rng(0).standard_normal((1, 2, 4, 4)).astype(np.float32)}
    (ours,) = slimtvm.load(str(tmp_path / "nan.so")).run(inputs).values()
    (theirs,) = onnxruntime_outputs(str(path), inputs).values()
    assert np.isnan(ours).any() and np.isinf(ours).any()
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    np.testing.assert_array_equal(np.isposinf(ours), np.isposinf(theirs))
    np.testing.assert_array_equal(np.isneginf(ours), np.isneginf(theirs))
    finite = np.isfinite(theirs)
    np.testing.assert_allclose(ours[finite], theirs[finite], rtol=1e-5, atol=1e-5)


def test_unknown_target(small_model, tmp_path, capsys):
    fails_cleanly(["compile", small_model, "-o", str(tmp_path / "out.so"), "--target", "riscv-pro"], capsys, tmp_path, "unknown target 'riscv-pro'")


def test_malformed_target_json(small_model, tmp_path, capsys):
    fails_cleanly(["compile", small_model, "-o", str(tmp_path / "out.so"), "--target", '{"kind": "llvm",'], capsys, tmp_path, "target JSON is malformed")


def test_non_cpu_target(small_model, tmp_path, capsys):
    fails_cleanly(["compile", small_model, "-o", str(tmp_path / "out.so"), "--target", '{"kind": "cuda"}'], capsys, tmp_path, "kind 'cuda' is not supported")


def test_missing_cross_compiler(small_model, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    fails_cleanly(
        ["compile", small_model, "-o", str(tmp_path / "out.so"), "--target", "aarch64"], capsys, tmp_path, "cross compiler aarch64-linux-gnu-g++ not found"
    )


def test_output_folder_missing(small_model, tmp_path, capsys):
    fails_cleanly(["compile", small_model, "-o", str(tmp_path / "no" / "such" / "out.so")], capsys, tmp_path, "does not exist")


def test_failed_compile_keeps_the_existing_artifact(small_model, small_artifact, tmp_path, capsys):
    """A compile that fails must not touch an artifact already at the output path."""
    before = open(small_artifact, "rb").read()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    status = main(["compile", str(bad), "-o", small_artifact])
    assert status == 2
    capsys.readouterr()
    assert open(small_artifact, "rb").read() == before


def test_npz_with_wrong_names(small_artifact, tmp_path, capsys):
    np.savez(tmp_path / "in.npz", images=np.zeros((1, 2, 5, 5), np.float32))
    fails_cleanly(
        ["run", small_artifact, "--input", str(tmp_path / "in.npz"), "--output", str(tmp_path / "out.npz")],
        capsys,
        tmp_path,
        "missing 'x'; unexpected 'images'",
    )


def test_npz_with_wrong_shape(small_artifact, tmp_path, capsys):
    np.savez(tmp_path / "in.npz", x=np.zeros((1, 2, 6, 5), np.float32))
    fails_cleanly(
        ["run", small_artifact, "--input", str(tmp_path / "in.npz"), "--output", str(tmp_path / "out.npz")],
        capsys,
        tmp_path,
        "input 'x' has shape [1, 2, 6, 5]; the model was compiled for [1, 2, 5, 5]",
    )


def test_input_file_that_is_not_npz(small_artifact, tmp_path, capsys):
    (tmp_path / "in.npz").write_text("hello")
    fails_cleanly(["run", small_artifact, "--input", str(tmp_path / "in.npz"), "--output", str(tmp_path / "out.npz")], capsys, tmp_path, "not a readable .npz")


def test_errors_are_one_line_from_a_real_process(tmp_path):
    """The installed entry point: exit status 2 and a single line, no traceback."""
    proc = subprocess.run(
        [sys.executable, "-m", "slimtvm", "compile", str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "o.so")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"slimtvm: error: model file not found: {tmp_path / 'missing.onnx'}"]
    assert os.listdir(tmp_path) == []


def test_unknown_cpu_in_a_json_target(small_model, tmp_path, capsys):
    """LLVM only warns about an unknown CPU and builds for a generic one: refuse it instead."""
    message = fails_cleanly(
        ["compile", small_model, "-o", str(tmp_path / "out.so"), "--target", '{"kind": "llvm", "mcpu": "skylakez"}'],
        capsys,
        tmp_path,
        "mcpu 'skylakez' is not a CPU LLVM knows",
    )
    assert "skylake-avx512" in message  # the valid names are listed


def test_input_shape_given_twice(small_model, tmp_path, capsys):
    fails_cleanly(
        ["compile", small_model, "-o", str(tmp_path / "out.so"), "--input-shape", "x=1,2,5,5", "--input-shape", "x=2,2,5,5"],
        capsys,
        tmp_path,
        "--input-shape is given twice for input 'x'",
    )


def test_a_single_npy_array_as_input_or_calibration(small_model, small_artifact, tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.zeros((1, 2, 5, 5), np.float32))
    npy = str(tmp_path / "x.npy")
    fails_cleanly(["run", small_artifact, "--input", npy], capsys, tmp_path, f"--input {npy}: a single .npy array; give an .npz keyed by input names")
    fails_cleanly(
        ["compile", small_model, "-o", str(tmp_path / "out.so"), "--binarize", "weights", "--keep-float", "none", "--calibration", npy],
        capsys,
        tmp_path,
        f"--calibration {npy}: a single .npy array",
    )


@pytest.mark.parametrize(
    "array, outcome",
    [
        (np.zeros((1, 2, 5, 5), np.float64) + 0.1, "warning: input 'x' is float64: rounded to the model's float32"),
        (np.ones((1, 2, 5, 5), np.int64), "warning: input 'x' is int64: converted to the model's float32 (every value kept)"),
        (np.ones((1, 2, 5, 5), bool), "warning: input 'x' is bool: converted to the model's float32 (every value kept)"),
        (np.full((1, 2, 5, 5), 2**40 + 1, np.int64), "error: input 'x' has dtype int64; converting it to the model's float32 would change its values"),
    ],
)
def test_run_converts_input_dtypes_only_with_a_notice(small_artifact, tmp_path, capsys, array, outcome):
    np.savez(tmp_path / "in.npz", x=array)
    status = main(["run", small_artifact, "--input", str(tmp_path / "in.npz")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == (2 if "error:" in outcome else 0)
    assert err == [f"slimtvm: {outcome}"], err


def test_a_manifest_without_its_inputs(small_artifact, tmp_path, capsys):
    import json
    import shutil

    library = str(tmp_path / "copy.so")
    shutil.copy(small_artifact, library)
    manifest = json.load(open(small_artifact[:-3] + ".json"))
    del manifest["inputs"]
    json.dump(manifest, open(library[:-3] + ".json", "w"))
    fails_cleanly(["run", library, "--random-input"], capsys, tmp_path, "is damaged: 'inputs' must list each tensor's name, shape and dtype")


def test_an_opset_newer_than_onnx_knows(tmp_path, capsys):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    path = str(tmp_path / "opset99.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 99)]), path)
    fails_cleanly(["compile", path, "-o", str(tmp_path / "out.so")], capsys, tmp_path, "uses ONNX opset 99; the onnx package here knows opsets up to")


def _artifact_files(folder) -> dict:
    return {name: open(os.path.join(folder, name), "rb").read() for name in sorted(os.listdir(folder))}


@pytest.fixture
def previous_artifact(small_model, small_artifact, tmp_path):
    """A folder holding one artifact (library + manifest) that a failed compile must not touch."""
    import shutil

    folder = tmp_path / "out"
    folder.mkdir()
    shutil.copy(small_artifact, folder / "model.so")
    shutil.copy(small_artifact[:-3] + ".json", folder / "model.json")
    return str(folder / "model.so")


def test_a_manifest_path_that_is_a_folder_is_refused_before_compiling(small_model, tmp_path, capsys):
    (tmp_path / "model.json").mkdir()
    fails_cleanly(["compile", small_model, "-o", str(tmp_path / "model.so")], capsys, tmp_path, "model.json is a directory")


@pytest.mark.parametrize("failing", ["library copy", "manifest rename"])
def test_a_failed_artifact_write_keeps_the_previous_artifact_whole(small_model, previous_artifact, capsys, monkeypatch, failing):
    """Injected failures while the pair is written: one line, exit 2, the previous library and
    manifest byte-for-byte as they were, and no staged file left behind."""

    import slimtvm.atomic_files
    import slimtvm.compiler.build

    folder = os.path.dirname(previous_artifact)
    before = _artifact_files(folder)
    if failing == "library copy":

        def copyfile(source, destination):
            raise OSError(28, "No space left on device", destination)

        monkeypatch.setattr(slimtvm.compiler.build.shutil, "copyfile", copyfile)
    else:
        real_replace = os.replace

        def replace(source, destination):
            if destination.endswith(".json"):
                raise OSError(30, "Read-only file system", destination)
            real_replace(source, destination)

        monkeypatch.setattr(slimtvm.atomic_files.os, "replace", replace)
    status = main(["compile", small_model, "-o", previous_artifact])
    err = capsys.readouterr().err.strip().splitlines()
    monkeypatch.undo()
    assert status == 2 and len(err) == 1 and err[0].startswith(f"slimtvm: error: cannot write the artifact at {previous_artifact}"), err
    assert _artifact_files(folder) == before  # same files, same bytes: no staged file left either


def test_run_output_that_is_a_folder(small_artifact, tmp_path, capsys):
    (tmp_path / "out.npz").mkdir()
    fails_cleanly(["run", small_artifact, "--random-input", "--output", str(tmp_path / "out.npz")], capsys, tmp_path, "is a directory")
