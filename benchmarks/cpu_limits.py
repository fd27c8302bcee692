"""The host's limits, measured here: fp32 multiply-adds and binary (XOR + popcount) MACs per second per core, and per thread count the parallel multiply-adds, a parallel loop's fork and join, memory read bandwidth and the cost of reading what another thread wrote.

    .venv/bin/python benchmarks/cpu_limits.py [--target host|x86-64|...] [--threads 1,2]

Two register-resident TVM kernels, compiled for the target and run on 1 thread: ``acc += a · b``
over 8–16 independent vector accumulators (fp32 lanes of the target: 16 on AVX-512, 8 on AVX2),
and ``acc += popcount(a XOR w)`` on byte lanes (64 bytes on AVX-512, 32 otherwise; each byte is
8 binary MACs). No memory traffic beyond L1, so the figures are what one core can do at best;
the best over the accumulator counts is reported. The other benchmarks print them next to their
own throughput (the roofline of the host they ran on, not of another machine).

The bandwidth figures are a third TVM kernel: a parallel sum over a 512 MiB float32 array (16 times
the largest L3 of these machines, so every byte comes from memory) and over an 8 MiB one (past
the L2s, inside the L3), in 256 chunks of 4 vector accumulators each, timed at each thread count
of ``--threads`` (median of 7, or of 201 for the small array, after one warm-up).
The parallel multiply-adds (``PARALLEL_CHUNKS`` chunks of the register-resident work, all threads
together) say how far the cores themselves scale: on two real cores 2 threads do 2× the work of 1;
two vCPUs that a hypervisor put on one core's SMT siblings, or a shared clock, give less, and no
compute-bound kernel can scale past that ratio. The hand-off line times a parallel sum over 1 MiB
that a parallel kernel just wrote, each thread reading its own part or another thread's: what a
kernel pays when the kernel before it split its output among the threads differently. A kernel
whose bytes cannot shrink (a batch-1 layer streaming its weights) cannot scale with threads past
the ratio of these figures.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
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


MEMORY_FLOATS = 128 * 1024 * 1024  # 512 MiB: from memory
CACHE_FLOATS = 2 * 1024 * 1024  # 8 MiB: past both cores' L2, inside the L3
STREAM_CHUNKS = 256
STREAM_ACCUMULATORS = 4


def _read_kernel(lanes: int, floats: int, shift: int = 0):
    """A parallel sum over ``floats`` float32 values in :data:`STREAM_CHUNKS` chunks, chunk ``c``
    summing the values of chunk ``c + shift`` (modulo the chunks; see :func:`handoff_reads`)."""
    from tvm.script import tirx as T

    per_chunk = floats // (STREAM_CHUNKS * STREAM_ACCUMULATORS * lanes)

    @T.prim_func
    def main(
        a: T.Buffer((STREAM_CHUNKS, per_chunk, STREAM_ACCUMULATORS, lanes), "float32"), out: T.Buffer((STREAM_CHUNKS, STREAM_ACCUMULATORS, lanes), "float32")
    ):
        T.func_attr({"global_symbol": "main", "tirx.noalias": True})
        for chunk in T.parallel(STREAM_CHUNKS):
            acc = T.alloc_buffer((STREAM_ACCUMULATORS, lanes), "float32", scope="local")
            for i in T.unroll(STREAM_ACCUMULATORS):
                for lane in T.vectorized(lanes):
                    acc[i, lane] = T.float32(0)
            for k in range(per_chunk):
                for i in T.unroll(STREAM_ACCUMULATORS):
                    for lane in T.vectorized(lanes):
                        acc[i, lane] = acc[i, lane] + a[(chunk + shift) % STREAM_CHUNKS, k, i, lane]
            for i in T.unroll(STREAM_ACCUMULATORS):
                for lane in T.vectorized(lanes):
                    out[chunk, i, lane] = acc[i, lane]

    return main


HANDOFF_FLOATS = 256 * 1024  # 1 MiB: an activation between two kernels, in the cores' L2s
HANDOFF_SHIFTS = (0, *(STREAM_CHUNKS // threads for threads in (2, 4, 8, 16, 32)))  # the kit's hand-off reads


# The many-core kit's machine limits (benchmarks/many_core.py): kernels built here, run there with
# TVM's runtime only, at every thread count of the models' table.
PARALLEL_CHUNKS = 256  # chunks of the parallel multiply-add kernel (16 per thread at 16 threads)
PARALLEL_ITERATIONS = 2_000
PARALLEL_ACCUMULATORS = 12
LAUNCH_CHUNKS = 64  # the near-empty parallel loop whose time is the pool's fork and join


def _parallel_fma_kernel(accumulators: int, lanes: int):
    from tvm.script import tirx as T

    @T.prim_func
    def main(a: T.Buffer((accumulators, lanes), "float32"), b: T.Buffer((64,), "float32"), out: T.Buffer((PARALLEL_CHUNKS, accumulators, lanes), "float32")):
        T.func_attr({"tirx.noalias": True})
        for chunk in T.parallel(PARALLEL_CHUNKS):
            acc = T.alloc_buffer((accumulators, lanes), "float32", scope="local")
            for i in T.unroll(accumulators):
                for lane in T.vectorized(lanes):
                    acc[i, lane] = T.float32(0)
            for k in range(PARALLEL_ITERATIONS):
                for i in T.unroll(accumulators):
                    for lane in T.vectorized(lanes):
                        acc[i, lane] = acc[i, lane] + a[i, lane] * b[(k + chunk) % 64]
            for i in T.unroll(accumulators):
                for lane in T.vectorized(lanes):
                    out[chunk, i, lane] = acc[i, lane]

    return main


def _launch_kernel():
    from tvm.script import tirx as T

    @T.prim_func
    def main(out: T.Buffer((LAUNCH_CHUNKS, 16), "float32")):
        T.func_attr({"tirx.noalias": True})
        for chunk in T.parallel(LAUNCH_CHUNKS):
            out[chunk, 0] = out[chunk, 0] + T.float32(1)  # one cache line per chunk

    return main


def build_limits_library(target_name: str, path: str, memory_mib: int = 1024, cache_mib: int = 64) -> dict:
    """Compile the machine-limits kernels for ``target_name`` into the shared library ``path`` and
    return what :func:`machine_limits` needs to run them (sizes, lanes): a parallel multiply-add
    over :data:`PARALLEL_CHUNKS` chunks of register-resident work (compute at N threads: does it
    scale with the cores, or do two threads share one?), parallel sums over ``memory_mib`` and
    ``cache_mib`` MiB (read bandwidth from memory and from the L3) and a parallel loop of
    :data:`LAUNCH_CHUNKS` one-line writes (the thread pool's fork and join), and the hand-off write
    and reads (:func:`handoff_reads`) for 2–32 threads. Refuses sizes that do not split into the
    read kernel's chunks."""
    import tvm

    from slimtvm.targets.kernel_target import KernelTarget
    from slimtvm.targets.presets import resolve_target

    target = resolve_target(target_name).tvm_target()
    lanes = KernelTarget.of(target).lanes
    sizes = {"read_memory": memory_mib * 2**20 // 4, "read_cache": cache_mib * 2**20 // 4}
    for name, floats in sizes.items():
        if floats % (STREAM_CHUNKS * STREAM_ACCUMULATORS * lanes):
            raise SystemExit(f"{name}: {floats} floats do not split into {STREAM_CHUNKS} chunks of {STREAM_ACCUMULATORS} × {lanes}-lane vectors")
    functions = {
        "parallel_fma": _parallel_fma_kernel(PARALLEL_ACCUMULATORS, lanes),
        "launch": _launch_kernel(),
        **{name: _read_kernel(lanes, floats) for name, floats in sizes.items()},
        "handoff_write": _handoff_write_kernel(lanes, HANDOFF_FLOATS),
        **{f"handoff_read_{shift}": _read_kernel(lanes, HANDOFF_FLOATS, shift) for shift in HANDOFF_SHIFTS},
    }
    module = tvm.IRModule({name: function.with_attr("global_symbol", name) for name, function in functions.items()})
    tvm.compile(module, target).export_library(path)
    return {"lanes": lanes, "read_floats": sizes, "handoff_floats": HANDOFF_FLOATS}


def machine_limits(path: str, description: dict, repeat: int = 21, threads: int = 1) -> dict:
    """Run :func:`build_limits_library`'s kernels from ``path`` with TVM's runtime only, on the
    thread pool as configured (TVM_NUM_THREADS, ``threads`` threads): ``fp32_gmacs`` (all threads
    together), ``memory_gbs``, ``cache_gbs`` (read bandwidth), ``launch_us`` (a parallel loop's fork
    and join) and, at 2–32 threads where the kit has them, ``handoff_own_us`` and
    ``handoff_other_us`` (:func:`handoff_reads`). Every kernel's output is checked against numpy
    first."""
    import tvm

    library = tvm.runtime.load_module(path)
    lanes = description["lanes"]

    fma_args = _checked_fma_args(library, lanes)
    macs = PARALLEL_CHUNKS * PARALLEL_ITERATIONS * PARALLEL_ACCUMULATORS * lanes
    result = {"fp32_gmacs": macs / _median_seconds(library["parallel_fma"], fma_args, repeat) / 1e9}
    for name, key in (("read_memory", "memory_gbs"), ("read_cache", "cache_gbs")):
        floats = description["read_floats"][name]
        per_chunk = floats // (STREAM_CHUNKS * STREAM_ACCUMULATORS * lanes)
        data = tvm.runtime.tensor(np.ones((STREAM_CHUNKS, per_chunk, STREAM_ACCUMULATORS, lanes), np.float32))
        sums = tvm.runtime.tensor(np.zeros((STREAM_CHUNKS, STREAM_ACCUMULATORS, lanes), np.float32))
        library[name](data, sums)
        if not np.all(sums.numpy() == per_chunk):
            raise SystemExit(f"the {name} kernel's sums differ from numpy's")
        result[key] = floats * 4 / _median_seconds(library[name], (data, sums), 7 if name == "read_memory" else repeat) / 1e9
        del data
    counter = tvm.runtime.tensor(np.zeros((LAUNCH_CHUNKS, 16), np.float32))
    library["launch"](counter)
    if not np.all(counter.numpy()[:, 0] == 1):
        raise SystemExit("the parallel launch kernel missed a chunk")
    result["launch_us"] = _median_seconds(library["launch"], (counter,), 2001) * 1e6
    floats = description.get("handoff_floats")
    if floats and threads >= 2 and STREAM_CHUNKS // threads in HANDOFF_SHIFTS and STREAM_CHUNKS % threads == 0:
        shifts = [0, STREAM_CHUNKS // threads]
        reads = [library[f"handoff_read_{shift}"] for shift in shifts]
        result["handoff_own_us"], result["handoff_other_us"] = _handoff_times(library["handoff_write"], reads, shifts, lanes, floats, 10 * repeat)
    return result


def _handoff_write_kernel(lanes: int, floats: int):
    """Every chunk of :data:`STREAM_CHUNKS` adds 1 to its own part of ``a`` (so that the lines sit
    modified in the writing core's cache) before a :func:`_read_kernel` sums them, each chunk the
    part ``shift`` chunks further on (0: what its own thread wrote; ``STREAM_CHUNKS / threads``:
    what the next thread wrote)."""
    from tvm.script import tirx as T

    per_chunk = floats // (STREAM_CHUNKS * STREAM_ACCUMULATORS * lanes)

    @T.prim_func
    def write(a: T.Buffer((STREAM_CHUNKS, per_chunk, STREAM_ACCUMULATORS, lanes), "float32")):
        T.func_attr({"tirx.noalias": True})
        for chunk in T.parallel(STREAM_CHUNKS):
            for k in range(per_chunk):
                for i in T.unroll(STREAM_ACCUMULATORS):
                    for lane in T.vectorized(lanes):
                        a[chunk, k, i, lane] = a[chunk, k, i, lane] + T.float32(1)

    return write


def _handoff_times(write, reads: list, shifts: list, lanes: int, floats: int, rounds: int) -> list[float]:
    """Median µs of each of ``reads`` (read kernels of the given ``shifts``) right after ``write``,
    the reads taking turns for ``rounds`` rounds; the first round's sums are checked against numpy."""
    import tvm

    shape = (STREAM_CHUNKS, floats // (STREAM_CHUNKS * STREAM_ACCUMULATORS * lanes), STREAM_ACCUMULATORS, lanes)
    data = tvm.runtime.tensor(np.zeros(shape, np.float32))
    out = tvm.runtime.tensor(np.zeros((STREAM_CHUNKS, STREAM_ACCUMULATORS, lanes), np.float32))
    times = [[] for _ in reads]
    for round_index in range(rounds + 1):
        for index, (read, shift) in enumerate(zip(reads, shifts)):
            write(data)
            start = time.perf_counter()
            read(data, out)
            if round_index:
                times[index].append(time.perf_counter() - start)
            elif not np.allclose(out.numpy(), np.roll(data.numpy(), -shift, axis=0).sum(axis=1)):
                raise SystemExit("the hand-off read kernel's sums differ from numpy's")
    return [float(np.median(values)) * 1e6 for values in times]


def handoff_reads(target_name: str, threads: int, floats: int = HANDOFF_FLOATS, rounds: int = 201) -> tuple[float, float]:
    """(µs to read what the same thread wrote, µs to read what another thread wrote) at ``threads``
    (≥ 2) threads: a parallel write of ``floats`` float32 values, then a parallel sum of them, each
    chunk reading its own thread's part or the next thread's (TVM's pool gives each thread one
    contiguous range of chunks). The difference is what a kernel pays when the kernel before it
    split its output differently: on a mesh the lines come from another core's L2. The two reads
    take turns, medians of ``rounds``; the sums are checked against numpy."""
    import tvm

    from slimtvm.runtime.artifact import set_num_threads
    from slimtvm.targets.kernel_target import KernelTarget
    from slimtvm.targets.presets import resolve_target

    if threads < 2 or STREAM_CHUNKS % threads:
        raise SystemExit(f"the hand-off reads need at least 2 threads that divide {STREAM_CHUNKS} chunks, not {threads}")
    target = resolve_target(target_name).tvm_target()
    lanes = KernelTarget.of(target).lanes
    shifts = [0, STREAM_CHUNKS // threads]
    functions = {"write": _handoff_write_kernel(lanes, floats), **{f"read_{shift}": _read_kernel(lanes, floats, shift) for shift in shifts}}
    library = tvm.compile(tvm.IRModule({name: function.with_attr("global_symbol", name) for name, function in functions.items()}), target)
    set_num_threads(threads)
    own, other = _handoff_times(library["write"], [library[f"read_{shift}"] for shift in shifts], shifts, lanes, floats, rounds)
    set_num_threads(1)
    return own, other


def read_bandwidth(target_name: str, threads: list[int], floats: int = MEMORY_FLOATS) -> dict[int, float]:
    """Read bandwidth in GB/s at each thread count: a parallel sum over ``floats`` float32 values, checked against numpy."""
    import tvm

    from slimtvm.runtime.artifact import set_num_threads
    from slimtvm.targets.kernel_target import KernelTarget
    from slimtvm.targets.presets import resolve_target

    target = resolve_target(target_name).tvm_target()
    lanes = KernelTarget.of(target).lanes
    library = tvm.compile(tvm.IRModule({"main": _read_kernel(lanes, floats)}), target)
    per_chunk = floats // (STREAM_CHUNKS * STREAM_ACCUMULATORS * lanes)
    values = np.random.default_rng(0).random((STREAM_CHUNKS, per_chunk, STREAM_ACCUMULATORS, lanes), dtype=np.float32)
    data = tvm.runtime.tensor(values)
    out = tvm.runtime.tensor(np.zeros((STREAM_CHUNKS, STREAM_ACCUMULATORS, lanes), np.float32))
    library(data, out)
    expected = values.sum(axis=1, dtype=np.float64)
    if not np.allclose(out.numpy(), expected, rtol=1e-3):
        raise SystemExit("the read kernel's sums differ from numpy's")
    del values, expected
    rates = {}
    for count in threads:
        set_num_threads(count)
        library(data, out)
        times = []
        for _ in range(7 if floats == MEMORY_FLOATS else 201):
            start = time.perf_counter()
            library(data, out)
            times.append(time.perf_counter() - start)
        rates[count] = floats * 4 / float(np.median(times)) / 1e9
    set_num_threads(1)
    return rates


def parallel_compute(target_name: str, threads: list[int], rounds: int = 21, runs: int = 5) -> dict[int, tuple[float, float, float, float]]:
    """At each thread count of ``threads``: (fp32 G MAC/s of all threads together, its ratio to
    the first count's, that ratio's lowest quarter (the 25th percentile of the rounds), µs of a
    parallel loop's fork and join). The multiply-adds are :data:`PARALLEL_CHUNKS` chunks of
    register-resident work (:func:`parallel_fma_probe`), so their ratio between thread counts is
    what the cores can give a compute-bound kernel: 2.0 from 1 to 2 threads on two real cores,
    less where the two threads share a core (SMT siblings under a hypervisor) or a clock. The
    thread counts take turns, ``rounds`` rounds of ``runs`` calls each (a VM whose speed drifts
    would otherwise read as scaling); rates and ratios are the medians over rounds."""
    from slimtvm.runtime.artifact import set_num_threads

    with tempfile.TemporaryDirectory() as folder:
        probe, macs, launch = parallel_fma_probe(target_name, folder, runs)
        rates = {count: [] for count in threads}
        launches = {count: [] for count in threads}
        for _ in range(rounds):
            for count in threads:
                set_num_threads(count)
                rates[count].append(macs / probe() / 1e9)
                launches[count].append(launch() * 1e6)
        set_num_threads(1)
    first = np.array(rates[threads[0]])
    ratios = {count: np.array(rates[count]) / first for count in threads}
    return {
        count: (float(np.median(rates[count])), float(np.median(ratios[count])), float(np.percentile(ratios[count], 25)), float(np.median(launches[count])))
        for count in threads
    }


def parallel_fma_probe(target_name: str, folder: str, runs: int = 3):
    """Build :func:`build_limits_library`'s kernels into ``folder`` and check the parallel
    multiply-add against numpy; return ``(probe, macs, launch)``: ``probe()`` is the median
    seconds of ``runs`` calls of the multiply-add kernel (``macs`` multiply-adds, register-resident)
    on TVM's thread pool as it is configured when called, ``launch()`` that of ``40 · runs``
    calls of the near-empty parallel loop (fork and join)."""
    import tvm

    path = os.path.join(folder, "limits.so")
    lanes = build_limits_library(target_name, path, memory_mib=4, cache_mib=4)["lanes"]
    library = tvm.runtime.load_module(path)
    fma_args = _checked_fma_args(library, lanes)
    counter = tvm.runtime.tensor(np.zeros((LAUNCH_CHUNKS, 16), np.float32))
    macs = PARALLEL_CHUNKS * PARALLEL_ITERATIONS * PARALLEL_ACCUMULATORS * lanes
    fma, launch_kernel = library["parallel_fma"], library["launch"]
    return (lambda: _median_seconds(fma, fma_args, runs)), macs, (lambda: _median_seconds(launch_kernel, (counter,), 40 * runs))


def _checked_fma_args(library, lanes: int) -> tuple:
    """The parallel multiply-add kernel's arguments, after one call of it checked against numpy."""
    import tvm

    rng = np.random.default_rng(0)
    a, b = rng.random((PARALLEL_ACCUMULATORS, lanes), dtype=np.float32), rng.random(64, dtype=np.float32)
    out = tvm.runtime.tensor(np.zeros((PARALLEL_CHUNKS, PARALLEL_ACCUMULATORS, lanes), np.float32))
    fma_args = (tvm.runtime.tensor(a), tvm.runtime.tensor(b), out)
    library["parallel_fma"](*fma_args)
    weights = b[(np.arange(PARALLEL_ITERATIONS)[None, :] + np.arange(PARALLEL_CHUNKS)[:, None]) % 64].sum(axis=1, dtype=np.float64)
    if not np.allclose(out.numpy(), weights[:, None, None] * a[None], rtol=1e-3):
        raise SystemExit("the parallel multiply-add kernel differs from numpy")
    return fma_args


def _median_seconds(function, args, runs: int) -> float:
    """Median wall time of ``runs`` calls of ``function(*args)`` after one warm-up call."""
    function(*args)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        function(*args)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


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
    parser.add_argument(
        "--threads", default="1,2", help="thread counts for the parallel multiply-adds and the memory read bandwidth (comma-separated; empty to skip)"
    )
    args = parser.parse_args(argv)
    limits = measure(args.target)
    print(f"CPU: {cpu_name()}; target {args.target}: {limits.describe()}; binary/fp32 = {limits.binary_gmacs / limits.fp32_gmacs:.1f}x")
    threads = [int(count) for count in args.threads.split(",") if count.strip()]
    if threads:
        compute = parallel_compute(args.target, threads)
        line = ", ".join(
            f"{count} thread{'s' if count > 1 else ''} {rate:.0f} G MAC/s (x{ratio:.2f}, a quarter of rounds below x{low:.2f}), fork+join {launch:.1f} us"
            for count, (rate, ratio, low, launch) in compute.items()
        )
        print(f"parallel multiply-adds (register-resident, {PARALLEL_CHUNKS} chunks, thread counts in turns): {line}")
    for floats, where in ((MEMORY_FLOATS, "memory, 512 MiB"), (CACHE_FLOATS, "L3, 8 MiB")):
        if not threads:
            break
        rates = read_bandwidth(args.target, threads, floats)
        first = rates[threads[0]]
        line = ", ".join(f"{count} thread{'s' if count > 1 else ''} {rate:.1f} GB/s (x{rate / first:.2f})" for count, rate in rates.items())
        print(f"read bandwidth ({where}, parallel sum): {line}")
    for count in (count for count in threads if count >= 2 and STREAM_CHUNKS % count == 0):
        own, other = handoff_reads(args.target, count)
        mib = HANDOFF_FLOATS * 4 / 2**20
        print(
            f"hand-off at {count} threads ({mib:.0f} MiB written by a parallel kernel, then summed): each thread reading its own part {own:.1f} us, "
            f"another thread's {other:.1f} us (+{other - own:.1f} us, x{other / own:.2f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
