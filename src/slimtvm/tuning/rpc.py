"""Measuring on a remote device through a TVM RPC server (``--rpc HOST:PORT[:KEY]``).

The server is a plain ``python -m tvm.exec.rpc_server`` on the device (for aarch64 on this
machine: scripts/rpc_server.sh under qemu). MetaSchedule's RPC runner expects a tracker; slimtvm
connects to the server directly instead, with a session function handed to its workers.
Kernels are cross-compiled here with the target's toolchain and uploaded.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from ..errors import SlimError

SESSION_TIMEOUT_SECONDS = 600  # an emulated device is slow; a session covers one round of runs


@dataclass(frozen=True)
class RPCAddress:
    host: str
    port: int
    key: str = ""

    def __str__(self) -> str:
        return f"{self.host}:{self.port}" + (f":{self.key}" if self.key else "")


def parse_rpc_address(text: str) -> RPCAddress:
    """``HOST:PORT`` or ``HOST:PORT:KEY``; refuses anything else with a one-line error."""
    parts = str(text).split(":")
    if len(parts) not in (2, 3) or not parts[0]:
        raise SlimError(f"--rpc must be HOST:PORT or HOST:PORT:KEY, got {text!r}")
    return RPCAddress(parts[0], parse_port(parts[1], "--rpc"), parts[2] if len(parts) == 3 else "")


def parse_port(text: str, flag: str) -> int:
    """A TCP port number from ``text``; refuses anything else naming ``flag`` in one line."""
    try:
        port = int(text)
    except ValueError:
        raise SlimError(f"{flag} port must be a number, got {text!r}") from None
    if not 0 < port < 65536:
        raise SlimError(f"{flag} port must be in 1..65535, got {port}")
    return port


def connect(address_host: str, address_port: int, address_key: str, _rpc_config=None):
    """Open a session with the server (the runner's ``f_create_session``; picklable by reference)."""
    from tvm import rpc

    return rpc.connect(address_host, address_port, key=address_key, session_timeout=SESSION_TIMEOUT_SECONDS)


def alloc_arguments_from_host(session, device, args_info, alloc_repeat):
    """Kernel arguments for a measurement, filled with random data made here and copied over.

    (MetaSchedule's default fills them on the device with ``tvm.contrib.random``, which a
    runtime-only TVM on a board does not have.)
    """
    import numpy as np
    from tvm.s_tir.meta_schedule.runner.utils import alloc_argument_common

    generator = np.random.default_rng(0)

    def fill(tensor):
        values = generator.uniform(-1.0, 1.0, size=tuple(tensor.shape))
        tensor.copyfrom(values.astype(str(tensor.dtype)))

    return alloc_argument_common(fill, device, args_info, alloc_repeat)


def check_reachable(address: RPCAddress) -> None:
    """Connect once, so that a wrong address fails now with one line rather than per trial."""
    try:
        session = connect(address.host, address.port, address.key)
        session.cpu(0)
    except Exception as err:  # noqa: BLE001 - socket and RPC errors
        from ..errors import first_line

        raise SlimError(f"cannot reach the TVM RPC server at {address}: {first_line(err)}") from None


def remote_builder_and_runner(spec, address: RPCAddress, evaluator, scratch: str, parallel: int = 1):
    """A local builder (``parallel`` workers) exporting with the target's toolchain into
    ``scratch``, and an RPC runner to ``address``."""
    from tvm.s_tir import meta_schedule as ms

    check_reachable(address)
    from .kernel_build import build_kernel, export_kernel

    builder = ms.builder.LocalBuilder(max_workers=parallel, f_build=build_kernel, f_export=functools.partial(export_kernel, spec.cross_compiler, scratch))
    runner = ms.runner.RPCRunner(
        rpc_config=ms.runner.RPCConfig(tracker_host="unused", tracker_port=1, tracker_key="unused", session_timeout_sec=SESSION_TIMEOUT_SECONDS),
        evaluator_config=evaluator,
        f_create_session=functools.partial(connect, address.host, address.port, address.key),
        f_alloc_argument=alloc_arguments_from_host,
        max_workers=1,
    )
    return builder, runner
