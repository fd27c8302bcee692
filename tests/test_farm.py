"""`slimtvm tune --tracker`: tuning on a farm of devices registered at TVM's RPC tracker.

The farm is scripts/rpc_farm.sh: a tracker and three aarch64 TVM RPC servers under qemu, all on
127.0.0.1, every process ended by its PID (process group) at the end. Part-way through the run one
device is killed while it measures (SIGKILL of its process group, like a board losing power) and
another is frozen while it measures (SIGSTOP: a hung board). The run must finish on what is left,
keep every record it had, end with no failed measurement (the lost ones were retried elsewhere),
and the tuned artifact must match onnxruntime when run under emulation. Timings under emulation
mean nothing; the flow is what is tested.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest
from conftest import REPO, assert_outputs_match, fails_cleanly, onnxruntime_outputs, run_under_emulation
from onnx_builders import GraphBuilder

import slimtvm

pytestmark = pytest.mark.aarch64
FARM = os.path.join(REPO, "scripts", "rpc_farm.sh")
KEY = "farm-test"
DEVICES = 3
RUN_DEADLINE_SECONDS = 240


def _free_port_block(width: int = 64) -> int:
    """A port with ``width`` ports above it free (the script gives each server its own range)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + width < 65536 and all(_port_free(base + i) for i in range(width)):
            return base
    raise RuntimeError("no free block of ports on 127.0.0.1")


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@pytest.fixture
def farm(arm_python, tmp_path):
    """(tracker address, server PIDs) of a farm of three emulated aarch64 devices; stopped by PID."""
    port = _free_port_block()
    state = str(tmp_path / "farm")
    env = dict(os.environ, ARM_PYTHON=arm_python, FARM_KEY=KEY, HOST_PYTHON=sys.executable)
    proc = subprocess.run(["bash", FARM, "start", str(DEVICES), str(port), state], capture_output=True, text=True, timeout=300, env=env)
    try:
        assert proc.returncode == 0, proc.stdout + proc.stderr
        pids = [int(line.split()[-1]) for line in proc.stdout.splitlines() if line.startswith("device ")]
        assert len(pids) == DEVICES, proc.stdout
        yield f"127.0.0.1:{port}", pids
    finally:
        stop = subprocess.run(["bash", FARM, "stop", str(port), state], capture_output=True, text=True, timeout=120, env=env)
        assert stop.returncode == 0, stop.stderr


def _measuring(pid: int) -> bool:
    """Whether the device whose process group is ``pid`` is in a session. An idle device is two
    processes (TVM's rpc_server launcher and the popen worker that serves); each session is served
    in a further forked process."""
    members = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            members += int(fields[2]) == pid  # pgrp
    return members >= 3


def _record_lines(db) -> list:
    path = os.path.join(db, "database_tuning_record.json")
    if not os.path.exists(path):
        return []
    with open(path, "rb") as handle:
        return [line for line in handle.read().split(b"\n") if line]


def _model(path):
    g = GraphBuilder(seed=7)
    y = g.relu(g.conv(g.input([1, 16, 12, 12]), 16, 16, kernel=3, pads=(1, 1, 1, 1)))
    model = g.model(g.gemm(g.node("Flatten", [y]), 16 * 12 * 12, 10))
    onnx.save(model, path)
    return model


def test_tune_on_a_farm_survives_a_dead_and_a_hung_device(farm, arm_python, tmp_path, capsys):
    tracker, pids = farm
    path = str(tmp_path / "model.onnx")
    model = _model(path)
    db = str(tmp_path / "db")
    wrong_key = ["tune", path, "--db", db, "--trials", "4", "--target", "aarch64", "--tracker", tracker, "--key", "no-such-board"]
    fails_cleanly(wrong_key, capsys, tmp_path, "no device is registered under key 'no-such-board'")
    command = [sys.executable, "-m", "slimtvm", "tune", path, "--db", db, "--target", "aarch64", "--tracker", tracker, "--key", KEY]
    command += ["--trials", "26", "--trials-per-round", "6", "--parallel", "2", "--measure-timeout", "25", "--seed", "1"]
    log = open(tmp_path / "tune.log", "w+")  # noqa: SIM115 - closed below, after the process ends
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True)
    killed = stopped = None
    kept_at_kill = []
    started = time.monotonic()
    try:
        while proc.poll() is None and time.monotonic() - started < RUN_DEADLINE_SECONDS:
            searched = len(_record_lines(db)) > 2  # past the two default schedules
            if killed is None and searched and _measuring(pids[0]):
                kept_at_kill = _record_lines(db)
                os.killpg(pids[0], signal.SIGKILL)
                killed = time.monotonic() - started
            elif killed is not None and stopped is None and len(_record_lines(db)) > len(kept_at_kill) and _measuring(pids[1]):
                os.killpg(pids[1], signal.SIGSTOP)
                stopped = time.monotonic() - started
            time.sleep(0.005)
        assert proc.poll() is not None, f"the tuning run did not end in {RUN_DEADLINE_SECONDS} s"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.seek(0)
        output = log.read()
        log.close()
    assert proc.returncode == 0, output[-3000:]
    assert killed is not None and stopped is not None, f"no device was caught measuring (killed at {killed}, stopped at {stopped}): {output[-2000:]}"
    assert "measurements retried on another device" in output, output[-2000:]
    assert "devices " in output and " measuring" in output  # the progress bar shows the farm
    lines = _record_lines(db)
    assert lines[: len(kept_at_kill)] == kept_at_kill, "records measured before the kill were lost or changed"
    assert len(lines) >= 26
    failed = [line for line in lines if min(json.loads(line)[1][1]) >= 1e9]  # MetaSchedule's mark of a failed run
    assert not failed, f"{len(failed)} measurements failed instead of being retried on another device"

    artifact = slimtvm.compile(path, str(tmp_path / "tuned.so"), target="aarch64", db=db)
    assert len(artifact.manifest["tuning"]["tuned_kernels"]) == 2
    inputs = {"x": np.random.default_rng(2).standard_normal((1, 16, 12, 12)).astype(np.float32)}
    assert_outputs_match(run_under_emulation(arm_python, artifact.library_path, inputs, tmp_path), onnxruntime_outputs(model, inputs))
