"""aarch64: cross-compile on this x86 host, run the artifact under qemu user-mode emulation with a
runtime-only TVM (as on a board: no compiler, no onnx), compare with onnxruntime on the host.

The emulated Python comes from scripts/setup_arm_emulation.sh (cached; ~25-50 s the first time).
"""

from __future__ import annotations

import os
import subprocess

import numpy as np
import onnx
import pytest
from binary_graphs import ConvSpec, conv_graph, conv_specs, sign_margin_ok
from conftest import assert_outputs_match, onnxruntime_outputs, run_under_emulation
from hypothesis import HealthCheck, assume, given, settings
from light_zoo import LIGHT, with_logits_output, with_random_weights
from onnx_builders import bn_positions_model
from sparse_graphs import sparse_graph, sparse_specs

import slimtvm

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.aarch64


def test_emulated_python_has_only_the_tvm_runtime(arm_python):
    """The emulated side is a board stand-in: aarch64, TVM runtime, no compiler, no onnx."""
    code = "import platform, tvm, importlib.util as u; print(platform.machine(), hasattr(tvm, 'relax'), u.find_spec('onnx') is None)"
    proc = subprocess.run([arm_python, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["aarch64", "False", "True"]


def test_bn_folded_model_runs_under_emulation(arm_python, tmp_path):
    model = bn_positions_model(seed=21)
    artifact = slimtvm.compile(model, str(tmp_path / "bn.so"), target="aarch64")
    assert artifact.manifest["target"]["arch"] == "aarch64"
    assert artifact.manifest["passes"][0]["batchnorms_folded"] == 8
    inputs = {"x": np.random.default_rng(4).standard_normal((1, 4, 12, 11)).astype(np.float32)}
    assert_outputs_match(run_under_emulation(arm_python, artifact.library_path, inputs, tmp_path), onnxruntime_outputs(model, inputs))


def test_light_squeezenet_runs_under_emulation(arm_python, tmp_path):
    """Random weights and the logits as an extra output, so the comparison means something."""
    model, logits = with_logits_output(with_random_weights(onnx.load(os.path.join(LIGHT, "light_squeezenet.onnx")), seed=3))
    artifact = slimtvm.compile(model, str(tmp_path / "squeezenet.so"), target="aarch64")
    inputs = {"data_0": np.random.default_rng(5).standard_normal((1, 3, 224, 224)).astype(np.float32)}
    outputs = run_under_emulation(arm_python, artifact.library_path, inputs, tmp_path)
    expected = onnxruntime_outputs(model, inputs)
    assert_outputs_match(outputs, expected)
    assert np.argmax(outputs[logits]) == np.argmax(expected[logits])


@pytest.mark.parametrize("shape,columns,form", [((1, 13, 48), 72, "GEMM kernel"), ((1, 256), 100, "matrix-vector kernel")])
def test_packed_matmul_in_one_vector_panels_runs_under_emulation(arm_python, tmp_path, shape, columns, form):
    """A tokens × features product by a constant weight (lowering/packed_matmuls.py): on NEON the
    weight is packed in panels of 4 columns, and the GEMM form's 6 × 2-vector tile reads two
    of them (13 rows: the last row tile partial); its bias and sigmoid fused. A one-row product (a
    classifier) in the panel form: tiles of 5 panels (of 25) × 8 segments of the reduction."""
    from test_packed_matmuls import _matmul_model

    model = _matmul_model(shape, columns, seed=6, activation="Sigmoid")
    artifact = slimtvm.compile(model, str(tmp_path / "packed.so"), target="aarch64")
    assert next(e for e in artifact.manifest["passes"] if e["name"] == "packed_matmuls")["packed"] == 1
    assert "4-column panels" in artifact.manifest["layers"][0]["plan"] and form in artifact.manifest["layers"][0]["plan"]
    inputs = {"x": np.random.default_rng(6).standard_normal(shape).astype(np.float32)}
    assert_outputs_match(run_under_emulation(arm_python, artifact.library_path, inputs, tmp_path), onnxruntime_outputs(model, inputs))


def test_atrous_conv_and_bilinear_upsampling_run_under_emulation(arm_python, tmp_path):
    """DeepLabV3's head in small: a dilation-12 conv on 14 × 14 (computed in regions without the
    taps on padding) and a bilinear upsampling (the separable kernel), on NEON."""
    from onnx_builders import GraphBuilder

    g = GraphBuilder(seed=12)
    x = g.input([1, 64, 14, 14])
    y = g.relu(g.conv(x, 64, 96, kernel=3, pads=(12, 12, 12, 12), dilation=12))
    sizes = g.const([1, 5, 56, 56], "sizes", dtype="int64")
    model = g.model(g.node("Resize", [g.conv(y, 96, 5, kernel=1), "", "", sizes], mode="linear", coordinate_transformation_mode="half_pixel"))
    artifact = slimtvm.compile(model, str(tmp_path / "head.so"), target="aarch64")
    assert next(e for e in artifact.manifest["passes"] if e["name"] == "padding_taps")["convs_in_regions"] == 1
    inputs = {"x": np.random.default_rng(12).standard_normal((1, 64, 14, 14)).astype(np.float32)}
    assert_outputs_match(run_under_emulation(arm_python, artifact.library_path, inputs, tmp_path), onnxruntime_outputs(model, inputs))


@pytest.fixture
def rpc_server(arm_python, tmp_path):
    """An aarch64 TVM RPC server under qemu on 127.0.0.1 (scripts/rpc_server.sh), stopped by PID."""
    import socket

    with socket.socket() as probe:  # a free port for this test
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = os.path.join(REPO, "scripts", "rpc_server.sh")
    env = dict(os.environ, ARM_PYTHON=arm_python)
    state = str(tmp_path / "rpc-state")
    proc = subprocess.run(["bash", script, "start", str(port), state], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run(["bash", script, "stop", str(port), state], capture_output=True, text=True, timeout=120, env=env)


def test_tune_two_tasks_for_aarch64_through_the_emulated_rpc_server(rpc_server, arm_python, tmp_path):
    """MetaSchedule measures on the (emulated) device over RPC; the tuned artifact is exact there.
    Timings under emulation mean nothing: the flow is what is tested."""
    from onnx_builders import GraphBuilder

    from slimtvm.targets.presets import resolve_target
    from slimtvm.tuning.database import open_database

    g = GraphBuilder(seed=5)
    y = g.relu(g.conv(g.input([1, 8, 8, 8]), 8, 16, kernel=3, pads=(1, 1, 1, 1)))
    model = g.model(g.gemm(g.node("Flatten", [y]), 16 * 8 * 8, 10))
    path = str(tmp_path / "two.onnx")
    onnx.save(model, path)
    db = str(tmp_path / "db")
    summary = slimtvm.tune(path, db, target="aarch64", rpc=rpc_server, trials=6, trials_per_round=2, progress=False, seed=0)
    assert sorted(t.kind for t in summary.tasks) == ["conv2d", "dense"]
    records = open_database(db, resolve_target("aarch64"), create=False).records_per_workload
    assert len(records) == 2 and all(count >= 2 for count in records.values()), records  # default + searched, each task
    artifact = slimtvm.compile(path, str(tmp_path / "two.so"), target="aarch64", db=db)
    assert len(artifact.manifest["tuning"]["tuned_kernels"]) == 2
    inputs = {"x": np.random.default_rng(1).standard_normal((1, 8, 8, 8)).astype(np.float32)}
    assert_outputs_match(run_under_emulation(arm_python, artifact.library_path, inputs, tmp_path), onnxruntime_outputs(model, inputs))


@settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(spec=conv_specs())
def test_random_binary_convs_under_emulation(arm_python, tmp_path, spec):
    """The property test's random binarized graphs (a smaller set), compiled for aarch64 (NEON
    byte popcounts) and run under qemu, give onnxruntime's outputs on the host."""
    model, inputs, probe = conv_graph(spec)
    assume(sign_margin_ok(probe, inputs, onnxruntime_outputs))
    expected = onnxruntime_outputs(model, inputs)
    artifact = slimtvm.compile(model, str(tmp_path / "binary.so"), target="aarch64")
    assert_outputs_match(run_under_emulation(arm_python, artifact.library_path, inputs, tmp_path), expected)


def test_binary_conv_register_transposes_under_emulation(arm_python, tmp_path):
    """NCHW in and out at 64 channels and 16 pixels per row: the sign packing and the dot products
    go through the 8 × 8 register transposes (NEON zip shuffles here)."""
    spec = ConvSpec(
        cin=64,
        cout=16,
        kernel=3,
        stride=1,
        dilation=1,
        pads=(1, 1, 1, 1),
        groups=1,
        size=16,
        batchnorm=False,
        maxpool=False,
        second=0,
        residual=False,
        seed=3,
        activation_bits=1,
    )
    model, inputs, _ = conv_graph(spec)
    artifact = slimtvm.compile(model, str(tmp_path / "transposes.so"), target="aarch64")
    assert_outputs_match(run_under_emulation(arm_python, artifact.library_path, inputs, tmp_path), onnxruntime_outputs(model, inputs))


@settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(spec=sparse_specs())
def test_random_pruned_graphs_under_emulation(arm_python, tmp_path, spec):
    """The sparse property test's random pruned graphs (a smaller set), compiled for aarch64 with
    every groups = 1 conv with zeros on the sparse kernel (NEON: 4-lane register blocks) and run
    under qemu, give onnxruntime's outputs on the host."""
    model, inputs = sparse_graph(spec)
    expected = onnxruntime_outputs(model, inputs)
    artifact = slimtvm.compile(model, str(tmp_path / "sparse.so"), target="aarch64", sparse="always")
    assert_outputs_match(run_under_emulation(arm_python, artifact.library_path, inputs, tmp_path), expected)


@pytest.mark.parametrize("name", ["gpt2_script", "whisper_encoder_dynamo"])
def test_hugging_face_exports_run_under_emulation(arm_python, tmp_path, name):
    """torch's exports on NEON kernels: GPT-2's tanh GELU, token GEMMs and causal attention;
    Whisper's 1-D convs (as 2-D ones) and SDPA attention with its NaN guard (tests/data/hf/)."""
    from test_hf_exports import DATA, _inputs

    model = onnx.load(os.path.join(DATA, f"{name}.onnx"))
    artifact = slimtvm.compile(model, str(tmp_path / f"{name}.so"), target="aarch64")
    inputs = _inputs(model)
    assert_outputs_match(run_under_emulation(arm_python, artifact.library_path, inputs, tmp_path), onnxruntime_outputs(model, inputs))


def test_artifacts_run_on_slimtvms_thread_pool_under_emulation(arm_python, tmp_path):
    """The pool is cross-compiled into the aarch64 library (`nm -D`), the runtime-only emulated
    Python switches the library to it, and 4 threads (more than this host's cores) still match
    onnxruntime."""
    digits = os.path.join(REPO, "examples", "digits_cnn.onnx")
    artifact = slimtvm.compile(digits, str(tmp_path / "digits.so"), target="aarch64")
    symbols = subprocess.run(["nm", "-D", "--defined-only", artifact.library_path], capture_output=True, text=True, check=True).stdout
    assert " slimtvm_parallel_launch" in symbols and " slimtvm_use_claiming_pool" in symbols
    inputs = {"image": np.random.default_rng(8).standard_normal((1, 1, 32, 32)).astype(np.float32)}
    np.savez(tmp_path / "inputs.npz", **inputs)
    code = (
        "import sys, numpy as np, slimtvm; from slimtvm.runtime import claiming_pool;"
        "m = slimtvm.load(sys.argv[1]); x = dict(np.load(sys.argv[2]));"
        "outputs = [m.run(x) for _ in range(5)];"
        "print(m.claiming_pool, claiming_pool.pool_threads()); np.savez(sys.argv[3], **outputs[-1])"
    )
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "src"), TVM_NUM_THREADS="4")
    proc = subprocess.run(
        [arm_python, "-c", code, artifact.library_path, str(tmp_path / "inputs.npz"), str(tmp_path / "outputs.npz")],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["True", "4"], proc.stdout
    with np.load(tmp_path / "outputs.npz") as saved:
        assert_outputs_match({name: saved[name] for name in saved.files}, onnxruntime_outputs(digits, inputs))
