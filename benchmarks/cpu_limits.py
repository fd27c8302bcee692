"""The host's per-core limits, measured here: fp32 multiply-adds and binary (XOR + popcount) MACs per second.

    .venv/bin/python benchmarks/cpu_limits.py [--target host|x86-64|...]

Two register-resident TVM kernels, compiled for the target and run on 1 thread: ``acc += a · b``
over 8–16 independent vector accumulators (fp32 lanes of the target: 16 on AVX-512, 8 on AVX2),
and ``acc += popcount(a XOR w)`` on byte lanes (64 bytes on AVX-512, 32 otherwise; each byte is
8 binary MACs). No memory traffic beyond L1, so the figures are what one core can do at best;
the best over the accumulator counts is reported. The other benchmarks print them next to their
own throughput (the roofline of the host they ran on, not of another machine).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "src"))

ITERATIONS = 200_000


def cpu_name() -> str:
    """``model name`` from /proc/cpuinfo (with the family/model numbers when it says little)."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if ":" in line:
                    key, value = (part.strip() for part in line.split(":", 1))
                    fields.setdefault(key, value)
    except OSError:
        return platform.processor() or "unknown CPU"
    name = fields.get("model name", "unknown CPU")
    return f"{name} (family {fields.get('cpu family', '?')} model {fields.get('model', '?')})"


@dataclass(frozen=True)
class CoreLimits:
    fp32_gmacs: float  # fp32 multiply-adds per second, 1 core, in G
    fp32_lanes: int
    binary_gmacs: float  # binary MACs (XOR + popcount) per second, 1 core, in G
    popcount_bytes: int

    def describe(self) -> str:
        return (
            f"measured limits per core: fp32 {self.fp32_gmacs:.0f} G MAC/s ({self.fp32_lanes}-lane FMA), "
            f"binary {self.binary_gmacs:.0f} G MAC/s ({self.popcount_bytes}-byte XOR + popcount)"
        )


def _fma_kernel(accumulators: int, lanes: int):
    from tvm.script import tirx as T

    @T.prim_func
    def main(a: T.Buffer((accumulators, lanes), "float32"), b: T.Buffer((64,), "float32"), out: T.Buffer((accumulators, lanes), "float32")):
        T.func_attr({"global_symbol": "main", "tirx.noalias": True})
        acc = T.alloc_buffer((accumulators, lanes), "float32", scope="local")
        for i in T.unroll(accumulators):
            for lane in T.vectorized(lanes):
                acc[i, lane] = T.float32(0)
        for k in range(ITERATIONS):
            for i in T.unroll(accumulators):
                for lane in T.vectorized(lanes):
                    acc[i, lane] = acc[i, lane] + a[i, lane] * b[k % 64]
        for i in T.unroll(accumulators):
            for lane in T.vectorized(lanes):
                out[i, lane] = acc[i, lane]

    return main


def _popcount_kernel(accumulators: int, width: int):
    from tvm.script import tirx as T

    @T.prim_func
    def main(a: T.Buffer((accumulators, width), "uint8"), w: T.Buffer((64,), "uint8"), out: T.Buffer((accumulators, width), "uint8")):
        T.func_attr({"global_symbol": "main", "tirx.noalias": True})
        acc = T.alloc_buffer((accumulators, width), "uint8", scope="local")
        for i in T.unroll(accumulators):
            for lane in T.vectorized(width):
                acc[i, lane] = T.uint8(0)
        for k in range(ITERATIONS):
            for i in T.unroll(accumulators):
                for lane in T.vectorized(width):
                    acc[i, lane] = acc[i, lane] + T.popcount(a[i, lane] ^ w[k % 64])
        for i in T.unroll(accumulators):
            for lane in T.vectorized(width):
                out[i, lane] = acc[i, lane]

    return main


def _best_rate(kernel, dtype: str, accumulators: int, width: int, target, work_per_element: int) -> float:
    import tvm

    library = tvm.compile(tvm.IRModule({"main": kernel(accumulators, width)}), target)
    rng = np.random.default_rng(0)
    if dtype == "float32":
        args = [rng.random((accumulators, width)).astype(dtype), rng.random(64).astype(dtype), np.zeros((accumulators, width), dtype)]
    else:
        args = [rng.integers(0, 256, (accumulators, width)).astype(dtype), rng.integers(0, 256, 64).astype(dtype), np.zeros((accumulators, width), dtype)]
    tensors = [tvm.runtime.tensor(x) for x in args]
    library(*tensors)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        library(*tensors)
        best = min(best, time.perf_counter() - start)
    return work_per_element * accumulators * width * ITERATIONS / best / 1e9


def measure(target_name: str = "host") -> CoreLimits:
    """The two limits for ``target_name`` (a slimtvm preset), on 1 thread of this host."""
    from slimtvm.runtime.artifact import set_num_threads
    from slimtvm.targets.kernel_target import KernelTarget
    from slimtvm.targets.presets import resolve_target

    set_num_threads(1)
    target = resolve_target(target_name).tvm_target()
    lanes = KernelTarget.of(target).lanes
    width = 64 if lanes == 16 else 32
    fp32 = max(_best_rate(_fma_kernel, "float32", count, lanes, target, 1) for count in (8, 12, 16))
    binary = max(_best_rate(_popcount_kernel, "uint8", count, width, target, 8) for count in (4, 8, 12))
    return CoreLimits(fp32, lanes, binary, width)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="host")
    args = parser.parse_args(argv)
    limits = measure(args.target)
    print(f"CPU: {cpu_name()}; target {args.target}: {limits.describe()}; binary/fp32 = {limits.binary_gmacs / limits.fp32_gmacs:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
