"""The CLI's happy paths: compile → run → bench, and inspect, on a real model with batch norms."""

from __future__ import annotations

import json
import os

import numpy as np
import onnx
import pytest
from conftest import assert_outputs_match, onnxruntime_outputs
from onnx_builders import bn_positions_model

from slimtvm.cli import main
from slimtvm.targets.presets import host_arch


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "bn_positions.onnx"
    onnx.save(bn_positions_model(), path)
    return str(path)


def test_compile_run_and_outputs_match(model_path, tmp_path, capsys):
    library = str(tmp_path / "model.so")
    assert main(["compile", model_path, "-o", library]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {library}" in printed
    assert "fold_batchnorm: 8 folded" in printed and "1 decomposed to mul+add" in printed
    manifest = json.load(open(library[:-3] + ".json"))
    assert [entry["name"] for entry in manifest["inputs"]] == ["x"]
    assert manifest["target"]["arch"] == host_arch()

    x = np.random.default_rng(5).standard_normal((1, 4, 12, 11)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    assert main(["run", library, "--input", str(tmp_path / "in.npz"), "--output", str(tmp_path / "out.npz")]) == 0
    printed = capsys.readouterr().out
    for entry in manifest["outputs"]:
        assert f"{entry['name']}: float32{entry['shape']}" in printed
    with np.load(tmp_path / "out.npz") as saved:
        outputs = {name: saved[name] for name in saved.files}
    assert_outputs_match(outputs, onnxruntime_outputs(model_path, {"x": x}))


def test_run_with_random_input(model_path, tmp_path, capsys):
    library = str(tmp_path / "model.so")
    assert main(["compile", model_path, "-o", library]) == 0
    capsys.readouterr()
    assert main(["run", library, "--random-input"]) == 0
    assert "top-5" in capsys.readouterr().out  # the [1, 5] output gets a top-5 line


def test_bench_prints_both_times_and_the_ratio(model_path, tmp_path, capsys):
    library = str(tmp_path / "model.so")
    assert main(["compile", model_path, "-o", library]) == 0
    capsys.readouterr()
    assert main(["bench", library, "--vs-onnxruntime", model_path, "--threads", "1", "--runs", "5", "--warmup", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("slimtvm ") and "median of 5 runs, 1 thread" in lines[0]
    assert lines[1].startswith("onnxruntime ")
    assert float(lines[2].split()[-1]) <= 1e-4  # "outputs agree: max relative difference X"
    assert lines[3].startswith("ratio slimtvm/onnxruntime = ")


def test_bench_refuses_a_different_model(model_path, tmp_path, capsys):
    library = str(tmp_path / "model.so")
    assert main(["compile", model_path, "-o", library]) == 0
    other = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light", "light_squeezenet.onnx")
    capsys.readouterr()
    assert main(["bench", library, "--vs-onnxruntime", other, "--runs", "1"]) == 2
    assert "not the same model" in capsys.readouterr().err


def _tiny_model(path: str, op: str = "Relu", output: str = "y") -> str:
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    node = helper.make_node(op, ["x"], [output], **({"keepdims": 1} if op == "ReduceSum" else {}))
    graph = helper.make_graph([node], "tiny", [x], [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def test_bench_says_outputs_differ_and_exits_non_zero(tmp_path, capsys):
    """Same input and output names and shapes, other values: a finding, exit 3."""
    library = str(tmp_path / "relu.so")
    assert main(["compile", _tiny_model(str(tmp_path / "relu.onnx")), "-o", library]) == 0
    capsys.readouterr()
    assert main(["bench", library, "--vs-onnxruntime", _tiny_model(str(tmp_path / "neg.onnx"), op="Neg"), "--runs", "2"]) == 3
    out = capsys.readouterr().out
    assert "outputs DIFFER: max relative difference" in out and "on output 'y'" in out, out
    assert "outputs agree" not in out


@pytest.mark.parametrize("other", [{"op": "ReduceSum"}, {"output": "z"}])
def test_bench_refuses_other_output_names_or_shapes(tmp_path, capsys, other):
    library = str(tmp_path / "relu.so")
    assert main(["compile", _tiny_model(str(tmp_path / "relu.onnx")), "-o", library]) == 0
    capsys.readouterr()
    assert main(["bench", library, "--vs-onnxruntime", _tiny_model(str(tmp_path / "other.onnx"), **other), "--runs", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("slimtvm: error: ") and "not the same model" in err and len(err.strip().splitlines()) == 1, err


def test_inspect_prints_layers_macs_and_the_fold_plan(model_path, capsys):
    assert main(["inspect", model_path, "--target", "x86-64"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "target: x86-64 (x86_64)"
    assert lines[1].split()[:8] == ["#", "name", "op", "output", "params", "MACs", "weights", "slimtvm"]
    conv = next(line for line in lines if " Conv " in f" {line} " and "3x3" not in line)
    assert "fp32 conv, plain NCHW input → NCHW8c kernel" in conv  # 4 input channels: not a block
    # first conv: 8 outputs of 6x5 (after stride 2, pads, dilation), 4 in-channels × 3×3 taps
    assert "1x8x6x5" in conv and f"{8 * 6 * 5 * 4 * 9:,}" in conv
    assert sum("folded back into" in line or "folded forward into" in line for line in lines) == 8
    assert sum("decomposed to multiply + add" in line for line in lines) == 1
    assert any(line.startswith("fold_batchnorm: 8 folded") for line in lines)
    assert "binarize: 0 binary convs, 0 binary dense layers (XNOR + popcount)" in lines
    # what the lowering recorded: the grouped conv after the depthwise one runs one conv per group
    # (lowering/split_grouped_convs.py), and the conv-transpose is named as a generic fallback
    assert "fp32 depthwise conv, NCHW8c kernel" in next(line for line in lines if " conv_21 " in line)
    assert "NCHW8c kernel, one conv per group (2 groups)" in next(line for line in lines if " conv_23 " in line)
    kernels = next(line for line in lines if line.startswith("kernels: "))
    assert kernels.startswith("kernels: 4 slimtvm (conv2d 2, dense 1, depthwise 1)"), kernels
    assert kernels.endswith("on the generic schedule: 1 (fused_conv2d_transpose_add3)"), kernels


def test_a_failure_of_slimtvms_own_pipeline_is_an_internal_error(tmp_path, capsys, monkeypatch):
    """A model plain TVM compiles must not fail as the user's error: exit 1, "internal error",
    and the full traceback in a file (here a schedule rule made to fail)."""
    import slimtvm.lowering.sequence as lowering_sequence

    class BrokenRule:
        def apply(self, func, target, tunable):
            raise RuntimeError("a deliberately broken schedule rule")

    monkeypatch.setattr(lowering_sequence, "default_rules", lambda lanes: [BrokenRule()])
    library = str(tmp_path / "relu.so")
    assert main(["compile", _tiny_model(str(tmp_path / "relu.onnx")), "-o", library]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("slimtvm: internal error: slimtvm's pipeline failed on a model plain TVM compiles") and len(err.splitlines()) == 1, err
    log = err.split("full traceback in ")[1].rstrip(")")
    assert "a deliberately broken schedule rule" in open(log).read()
    assert not os.path.exists(library)


def test_a_reader_that_goes_away_ends_the_command_quietly():
    """``slimtvm inspect … | head`` closes the pipe early: no error line, the SIGPIPE status."""
    import subprocess
    import sys

    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "slimtvm",
            "inspect",
            os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "digits_cnn.onnx"),
            "--no-passes",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    process.stdout.close()  # before the command writes its first line
    _, err = process.communicate(timeout=120)
    assert process.returncode == 141 and b"error" not in err, err
