"""Shared fixtures: onnxruntime as the reference, compile-and-run, relative error."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

sys.path.insert(0, os.path.dirname(__file__))
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import slimtvm  # noqa: E402
from slimtvm.runtime.bench import relative_difference  # noqa: E402

# "≤ 1e-4 relative": max|slimtvm − onnxruntime| / max|onnxruntime| over each output tensor.
RELATIVE_TOLERANCE = 1e-4


def x86_kernel_presets() -> list:
    """The x86 presets whose kernels this host can execute: the AVX2 build everywhere, and the
    host's own when it has AVX-512 (16-lane blocks)."""
    from slimtvm.targets.kernel_target import KernelTarget
    from slimtvm.targets.presets import host_arch, resolve_target

    if host_arch() != "x86_64":
        return []
    presets = ["x86-64"]
    if KernelTarget.of(resolve_target("host").tvm_target()).lanes == 16:
        presets.append("host")
    return presets


def scheduled_kernels(model, preset: str):
    """The IRModule of ``model``'s kernels as ``slimtvm compile`` schedules them for ``preset``
    (lowering, then the default rules), before they are built: for tests that read a kernel's loops."""
    import tvm
    from tvm.s_tir import dlight

    from slimtvm.compiler.pipeline import pipeline_for
    from slimtvm.frontend.onnx_import import import_onnx
    from slimtvm.schedules.registry import default_rules
    from slimtvm.targets.presets import resolve_target

    target = resolve_target(preset).tvm_target()
    pipeline = pipeline_for(target)
    with target:
        steps = pipeline.to_kernels() + [dlight.ApplyDefaultSchedule(*default_rules(pipeline.lowering.target.lanes))]
        return tvm.transform.Sequential(steps)(import_onnx(model, None).mod)


def onnxruntime_outputs(model, inputs: dict) -> dict:
    """Run ``model`` (ModelProto or path) in onnxruntime's CPU provider; outputs by name."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    # one thread: the reference's thread count does not change its result, and the suite runs
    # in two workers on two cores, where spinning onnxruntime threads slowed the other worker
    options.intra_op_num_threads = 1
    source = model if isinstance(model, (str, os.PathLike)) else model.SerializeToString()
    session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, inputs)))


def assert_outputs_match(actual: dict, expected: dict, tolerance: float = RELATIVE_TOLERANCE, floor: float = 0.0) -> dict:
    """Every expected output is present with its shape and within ``tolerance`` (relative).

    ``floor``: the smallest scale the error is relative to — the magnitude of one term of a sum
    whose exact value can be 0 (a binary dot product can cancel exactly; onnxruntime's float sum
    then leaves rounding noise, and noise relative to 0 is not an error)."""
    assert set(expected) <= set(actual), f"missing outputs {set(expected) - set(actual)}"
    errors = {}
    for name, reference in expected.items():
        assert actual[name].shape == reference.shape, f"{name}: shape {actual[name].shape} != {reference.shape}"
        errors[name] = relative_difference(actual[name], reference)
        if floor and reference.size:
            errors[name] = float(np.max(np.abs(actual[name].astype(np.float64) - reference))) / max(float(np.max(np.abs(reference))), floor)
        assert errors[name] <= tolerance, f"{name}: relative difference {errors[name]:.3e} > {tolerance:g}"
    return errors


def fails_cleanly(argv, capsys, folder, expect_in_message):
    """Run the CLI; assert exit 2, one stderr line containing ``expect_in_message``, no new files."""
    from slimtvm.cli import main

    before = set(os.listdir(folder))
    status = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2
    assert len(err) == 1, err
    assert err[0].startswith("slimtvm: error: ")
    assert expect_in_message in err[0], err[0]
    assert set(os.listdir(folder)) == before, f"left files behind: {set(os.listdir(folder)) - before}"
    return err[0]


@pytest.fixture
def compile_and_run(tmp_path):
    """compile_and_run(model, inputs, **compile options) → (outputs, artifact)."""

    def run(model, inputs, name="model", **options):
        artifact = slimtvm.compile(model, str(tmp_path / f"{name}.so"), **options)
        return artifact.load().run(inputs), artifact

    return run


def pytest_terminal_summary(terminalreporter):
    """Say which x86 kernel variants this run compiled and checked (the skip list, with reasons,
    is pytest's own -ra summary)."""
    from slimtvm.targets.kernel_target import KernelTarget
    from slimtvm.targets.presets import resolve_target

    described = []
    for preset in x86_kernel_presets():
        spec = resolve_target(preset)
        kernels = KernelTarget.of(spec.tvm_target())
        popcount = "AVX2 table popcount" if kernels.popcount_tables else "byte popcount (vpopcntb)"
        described.append(f"{preset} ({spec.config.get('mcpu', '?')}: {kernels.lanes} fp32 lanes, NCHW{kernels.channel_block}c, {popcount})")
    terminalreporter.write_line("x86 kernel variants checked against onnxruntime/numpy: " + ("; ".join(described) or "none (not an x86 host)"))


# aarch64 under qemu user-mode (tests marked aarch64: test_aarch64.py, test_farm.py)
@pytest.fixture(scope="session")
def arm_python():
    """The emulated aarch64 Python with TVM's runtime only (scripts/setup_arm_emulation.sh, cached)."""
    proc = subprocess.run(["bash", os.path.join(REPO, "scripts", "setup_arm_emulation.sh")], capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    path = proc.stdout.strip().splitlines()[-1]
    assert os.access(path, os.X_OK), path
    return path


def run_under_emulation(arm_python, library, inputs, tmp_path) -> dict:
    """Run a compiled aarch64 artifact with `slimtvm run` on the emulated, runtime-only Python."""
    np.savez(tmp_path / "inputs.npz", **inputs)
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "src"), TVM_NUM_THREADS="2")
    proc = subprocess.run(
        [arm_python, "-m", "slimtvm", "run", library, "--input", str(tmp_path / "inputs.npz"), "--output", str(tmp_path / "outputs.npz")],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with np.load(tmp_path / "outputs.npz") as saved:
        return {name: saved[name] for name in saved.files}
