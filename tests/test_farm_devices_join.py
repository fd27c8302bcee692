"""The farm runner (tuning/farm.py) uses a device that registers at the tracker mid-run.

A real TVM RPC tracker and two x86 TVM RPC servers on 127.0.0.1 (this Python, no emulation), each
started in its own process group and ended by that PID. The runner starts with one device; once a
second registers, its next round has room for two measurements at once, and the pool it replaced
is shut down.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from tvm.s_tir.meta_schedule.runner import EvaluatorConfig

from slimtvm.tuning.farm import FarmRunner, TrackerAddress, check_farm, registered_devices_or_none
from slimtvm.tuning.rpc import alloc_arguments_from_host

KEY = "join-test"
WAIT_SECONDS = 60


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start(args: list) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        assert time.monotonic() < deadline, f"{what} within {WAIT_SECONDS} s"
        time.sleep(0.2)


def _reachable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture
def tracker_and_servers():
    """(address, start_server) with every process ended by its process-group PID afterwards."""
    started = []
    port = _free_port()
    started.append(_start(["tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(port), "--port-end", str(port + 1), "--silent"]))
    address = TrackerAddress("127.0.0.1", port, KEY)

    def start_server() -> None:
        server_port = _free_port()
        args = ["tvm.exec.rpc_server", "--tracker", f"127.0.0.1:{port}", "--key", KEY, "--host", "127.0.0.1"]
        started.append(_start([*args, "--port", str(server_port), "--port-end", str(server_port + 1), "--silent"]))

    try:
        _wait_for(lambda: _reachable(port), "the tracker listens")
        yield address, start_server
    finally:
        for proc in reversed(started):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def test_a_device_that_joins_mid_run_is_measured_on(tracker_and_servers):
    address, start_server = tracker_and_servers
    start_server()
    _wait_for(lambda: registered_devices_or_none(address) == 1, "the first device registers")
    runner = FarmRunner(address, EvaluatorConfig(number=1, repeat=1), alloc_arguments_from_host, workers=check_farm(address), timeout=30)
    first_pool = runner.pool
    assert runner.workers == 1

    assert runner.run([]) == []  # a round with one device: nothing changes
    assert runner.pool is first_pool and runner.workers == 1

    start_server()
    _wait_for(lambda: registered_devices_or_none(address) == 2, "the second device registers")
    assert runner.run([]) == []
    assert runner.workers == 2 and runner.pool is not first_pool
    assert runner.retired_pools == [] and first_pool._shutdown  # nothing was in flight on it
    assert "/2 measuring" in runner.status_text()
