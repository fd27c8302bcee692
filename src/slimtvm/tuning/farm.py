"""Measuring on a farm of devices through TVM's RPC tracker (``--tracker HOST:PORT --key KEY``).

The tracker (``python -m tvm.exec.rpc_tracker``) is TVM's own broker for measurement fleets:
devices (``python -m tvm.exec.rpc_server --tracker ... --key KEY``) register with it, and every
request for KEY gets the next free one. slimtvm writes no scheduler of its own; what it adds on top
of MetaSchedule's RPC runner is what a fleet needs and that runner lacks:

- one measurement at a time per registered device, each in its own worker process with a deadline
  (MetaSchedule's runner waits forever on a device that hangs); a device that registers mid-run is
  used from the next round on (the runner's pool grows to the devices registered then);
- a measurement whose device dies or hangs is retried on another device (the tracker stops handing
  out a device that has gone), up to ``attempts`` times, so a lost device costs only time: the
  records already measured are committed round by round and stay;
- a one-line refusal when the tracker is unreachable or has no device under KEY, and when every
  device under KEY has left mid-run.
"""

from __future__ import annotations

import functools
import socket
import threading
from dataclasses import dataclass

from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.runner import PyRunner, PyRunnerFuture, RunnerResult

from ..errors import SlimError, first_line
from .rpc import alloc_arguments_from_host, parse_port

DEFAULT_MEASURE_TIMEOUT_SECONDS = 300  # one upload + load + timed runs on a slow (emulated) board
DEFAULT_ATTEMPTS = 3
CONNECT_TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class TrackerAddress:
    host: str
    port: int
    key: str

    def __str__(self) -> str:
        return f"{self.host}:{self.port} (key {self.key})"


def parse_tracker_address(text: str, key: str | None) -> TrackerAddress:
    """``HOST:PORT`` plus the device key; refuses anything else with a one-line error."""
    parts = str(text).rsplit(":", 1)
    if len(parts) != 2 or not parts[0]:
        raise SlimError(f"--tracker must be HOST:PORT, got {text!r}")
    port = parse_port(parts[1], "--tracker")
    if not key:
        raise SlimError("--tracker needs --key KEY: the key the devices registered under")
    return TrackerAddress(parts[0], port, key)


def registered_devices(address: TrackerAddress) -> int:
    """How many devices are registered under the address's key (the tracker's summary)."""
    from tvm import rpc

    tracker = rpc.connect_tracker(address.host, address.port)
    try:
        summary = tracker.summary()
    finally:
        tracker.close()
    return sum(1 for server in summary["server_info"] if server["key"] == "server:" + address.key)


def check_farm(address: TrackerAddress) -> int:
    """The number of devices registered under the key; refuses an unreachable tracker or none."""
    try:
        # TVM's tracker client retries a refused connection for a minute; a wrong address should not wait
        socket.create_connection((address.host, address.port), timeout=CONNECT_TIMEOUT_SECONDS).close()
        registered = registered_devices(address)
    except Exception as err:  # noqa: BLE001 - socket and RPC errors
        raise SlimError(f"cannot reach the TVM RPC tracker at {address.host}:{address.port}: {first_line(err)}") from None
    if registered == 0:
        raise SlimError(f"no device is registered under key {address.key!r} at the tracker {address.host}:{address.port}")
    return registered


def request_session(host: str, port: int, key: str, session_timeout: float, _rpc_config=None):
    """A session on the next free device under ``key`` (the workers' ``f_create_session``)."""
    from tvm import rpc

    tracker = rpc.connect_tracker(host, port)
    try:
        return tracker.request(key, priority=1, session_timeout=session_timeout, max_retry=1)
    finally:
        tracker.close()


@derived_object
class FarmRunnerFuture(PyRunnerFuture):
    """One measurement; a failed attempt (device died, hung past the deadline, refused) is sent
    again, to whichever device the tracker hands out next, until ``attempts`` are spent."""

    def __init__(self, runner, arguments: tuple) -> None:
        super().__init__()
        self.runner = runner
        self.arguments = arguments
        self.attempt = 1
        self.errors = []
        self.future = runner.submit(arguments)
        self.outcome = None

    def _settle(self, block: bool) -> bool:
        while self.outcome is None:
            if not block and not self.future.done():
                return False
            try:
                self.outcome = RunnerResult([float(v) for v in self.future.result()], None)
            except Exception as err:  # noqa: BLE001 - TimeoutError, RPC and socket errors alike
                self.errors.append(f"{type(err).__name__}: {first_line(err)}")
                if self.attempt >= self.runner.attempts:
                    self.outcome = RunnerResult(None, f"failed on {self.attempt} devices: " + " | ".join(self.errors))
                else:
                    self.attempt += 1
                    self.runner.retries += 1
                    self.future = self.runner.submit(self.arguments)
        return True

    def done(self) -> bool:
        return self._settle(block=False)

    def result(self) -> RunnerResult:
        self._settle(block=True)
        return self.outcome


@derived_object
class FarmRunner(PyRunner):
    """MetaSchedule runner over the tracker's devices: as many measurements in flight as devices
    are registered (counted when it starts and again at every round; it grows, and never shrinks:
    a device that left is noticed by the tracker, and a measurement waiting for it is retried),
    each with a deadline, failures retried elsewhere."""

    def __init__(self, address: TrackerAddress, evaluator, alloc_argument, workers: int, timeout: float, attempts: int = DEFAULT_ATTEMPTS) -> None:
        super().__init__()
        from tvm.s_tir.meta_schedule.runner import EvaluatorConfig, RPCConfig
        from tvm.support.popen_pool import PopenPoolExecutor

        self.address = address
        self.evaluator = EvaluatorConfig._normalized(evaluator)
        # only passed through to the worker; sessions come from request_session
        self.rpc_config = RPCConfig(tracker_host=address.host, tracker_port=address.port, tracker_key=address.key, session_timeout_sec=timeout)
        self.create_session = functools.partial(request_session, address.host, address.port, address.key, timeout)
        self.alloc_argument = alloc_argument
        self.attempts = attempts
        self.retries = 0
        self.stop_reason = None
        self.in_flight = 0
        self.counter_lock = threading.Lock()
        self.timeout = timeout
        self.workers = workers
        self.pool = PopenPoolExecutor(max_workers=workers, timeout=timeout)
        # measurements in flight per pool; a pool replaced by a larger one is shut down once it has none
        self.pool_in_flight = {self.pool: 0}
        self.retired_pools = []

    def status_text(self) -> str:
        """``devices 2/3 measuring`` for the progress bar: measurements in flight (one per device)
        over the devices registered now (``?`` while the tracker does not answer)."""
        registered = registered_devices_or_none(self.address)
        with self.counter_lock:
            in_flight = self.in_flight
        if registered is None:
            return f"devices {in_flight}/? measuring"
        return f"devices {min(in_flight, registered)}/{registered} measuring" + (f", {self.retries} retried" if self.retries else "")

    def _finished(self, pool, _future) -> None:
        with self.counter_lock:
            self.in_flight -= 1
            self.pool_in_flight[pool] -= 1

    def grow_to(self, registered: int | None) -> None:
        """Room for ``registered`` measurements at once when that is more than now (a device joined):
        later submissions go to a new, larger pool; the old one ends its measurements and is shut
        down at a later round. Shuts down retired pools with nothing in flight."""
        from tvm.support.popen_pool import PopenPoolExecutor

        with self.counter_lock:
            idle = [pool for pool in self.retired_pools if self.pool_in_flight[pool] == 0]
            self.retired_pools = [pool for pool in self.retired_pools if self.pool_in_flight[pool] > 0]
            if registered is not None and registered > self.workers:
                self.retired_pools.append(self.pool)
                if self.pool_in_flight[self.pool] == 0:
                    idle.append(self.retired_pools.pop())
                self.pool = PopenPoolExecutor(max_workers=registered, timeout=self.timeout)
                self.pool_in_flight[self.pool] = 0
                self.workers = registered
        for pool in idle:
            del self.pool_in_flight[pool]
            pool.shutdown(wait=False)

    def submit(self, arguments: tuple):
        from tvm.s_tir.meta_schedule.runner.rpc_runner import _worker_func

        artifact_path, device_type, args_info = arguments
        with self.counter_lock:
            self.in_flight += 1
            pool = self.pool
            self.pool_in_flight[pool] += 1
        future = pool.submit(
            _worker_func,
            self.create_session,
            None,
            self.alloc_argument,
            None,
            None,
            self.rpc_config,
            self.evaluator,
            1,
            artifact_path,
            device_type,
            args_info,
        )
        future.add_done_callback(functools.partial(self._finished, pool))
        return future

    def run(self, runner_inputs) -> list:
        registered = registered_devices_or_none(self.address)
        if registered == 0:
            # raised through MetaSchedule's C++ loop, which turns it into a RuntimeError: the tuning
            # run reads the reason back from here (stop_reason) to give the user one line
            self.stop_reason = f"every device under key {self.address.key!r} has left the tracker {self.address.host}:{self.address.port}; the records measured so far are kept"
            raise SlimError(self.stop_reason)
        self.grow_to(registered)
        return [
            FarmRunnerFuture(self, (str(item.artifact_path), str(item.device_type), tuple(info.as_json() for info in item.args_info))) for item in runner_inputs
        ]


def registered_devices_or_none(address: TrackerAddress) -> int | None:
    """Registered devices under the key, or None when the tracker does not answer (not a refusal:
    a tracker restart should not end a long run)."""
    try:
        return registered_devices(address)
    except Exception:  # noqa: BLE001
        return None


def farm_builder_and_runner(spec, address: TrackerAddress, evaluator, parallel: int, timeout: float, scratch: str):
    """A local builder with ``parallel`` workers (the target's toolchain; kernels written under
    ``scratch``) and a runner over the farm."""
    from tvm.s_tir import meta_schedule as ms

    from .kernel_build import build_kernel, export_kernel

    devices = check_farm(address)
    builder = ms.builder.LocalBuilder(max_workers=parallel, f_build=build_kernel, f_export=functools.partial(export_kernel, spec.cross_compiler, scratch))
    runner = FarmRunner(address, evaluator, alloc_arguments_from_host, workers=devices, timeout=timeout)
    return builder, runner
