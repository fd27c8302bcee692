"""slimtvm's parallel launch (``claiming_pool.c``): linked into every artifact, switched on at load.

TVM's kernels hand each parallel loop to ``TVMBackendParallelLaunch`` through a pointer that
TVM's loader sets in every library (``__TVMBackendParallelLaunch``). TVM's pool gives task i to
thread i and waits for every thread, so a core that another process holds stalls every parallel
loop until the operating system runs that core's worker again: on a 2-core VM with a process
spinning on one core, ResNet-18 took 124–144 ms at 2 threads against 18 ms at 1, MobileNetV2
212–220 ms against 7 (session 47, ``benchmarks/busy_core.py``). ``claiming_pool.c`` keeps each
thread's first task (the same split as TVM's) but lets any thread claim a task no thread has
started, benches a worker that keeps the caller waiting, and yields idle workers' cores: the
same runs take about their 1-thread time at 2 threads (onnxruntime's: about twice its own), and
a quiet machine runs them as fast as TVM's pool does.

:func:`object_file` compiles the C source for the linker of a build (once per compiler and
process); :func:`attach` points a loaded library's kernels at it. Libraries built before it
keep TVM's pool. A program that runs artifacts with TVM's C++ runtime alone can switch a library
to its own pool by calling the library's ``slimtvm_use_claiming_pool()`` after loading it.
``SLIMTVM_THREAD_POOL=tvm`` in the environment keeps TVM's pool.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import shutil
import subprocess
import tempfile
import threading

from ..errors import SlimError

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "claiming_pool.c")
C_FLAGS = ["-x", "c", "-std=gnu11", "-O2", "-fPIC", "-c"]

_objects: dict = {}  # compiler path → object file compiled in this process
_objects_lock = threading.Lock()
_scratch: list = []
_lock = threading.Lock()
_shared = None  # the ctypes handle of the library whose pool every attached library uses
_threads: int | None = None  # the last set_threads(); None: the pool's default (TVM_NUM_THREADS)
_tvm_launch: dict = {}  # library path → the launch function TVM's loader had set (TVM's pool)


def object_file(compiler: str) -> str:
    """The pool compiled to an object file by ``compiler`` (a C or C++ compiler driver of the
    gcc family: the host's or a cross toolchain's), for ``export_library``'s ``addons``.

    Refuses (``SlimError``) when the compiler fails."""
    with _objects_lock:
        path = _objects.get(compiler)
        if path is None:
            if not _scratch:
                _scratch.append(tempfile.mkdtemp(prefix="slimtvm-pool-"))
                atexit.register(shutil.rmtree, _scratch[0], True)
            path = os.path.join(_scratch[0], f"claiming_pool_{len(_objects)}.o")
            result = subprocess.run([compiler, *C_FLAGS, SOURCE, "-o", path], capture_output=True, text=True)
            if result.returncode != 0:
                last = (result.stderr.strip().splitlines() or ["no message"])[-1]
                raise SlimError(f"compiling slimtvm's thread pool with {compiler} failed: {last}")
            _objects[compiler] = path
        return path


def attach(library_path: str) -> bool:
    """Point the kernels of the library loaded from ``library_path`` (already loaded by TVM, so
    that this finds the same mapping) at slimtvm's pool; True if it did.

    One pool serves the process: the first attached library's (TVM never unloads a library, and
    this module keeps a reference to that one), so that two models run in turns do not each keep
    workers spinning. False, keeping TVM's pool, for a library built without the pool, one with
    no parallel kernel, one not loaded from that path, or when the environment sets
    ``SLIMTVM_THREAD_POOL=tvm``."""
    global _shared
    if os.environ.get("SLIMTVM_THREAD_POOL", "").lower() == "tvm":
        return False
    found = _launch_pointer(library_path)
    if found is None:
        return False
    library, launch_pointer = found
    with _lock:
        if _shared is None:
            _shared = library
            if _threads is not None:
                _shared.slimtvm_pool_set_threads(ctypes.c_int(_threads))
        _tvm_launch.setdefault(library_path, launch_pointer.value)
        launch_pointer.value = ctypes.cast(_shared.slimtvm_parallel_launch, ctypes.c_void_p).value
    return True


def use_tvm_pool(library_path: str) -> bool:
    """Point an attached library's kernels back at TVM's pool (for comparisons); True if it did."""
    found = _launch_pointer(library_path)
    with _lock:
        if found is None or library_path not in _tvm_launch:
            return False
        found[1].value = _tvm_launch[library_path]
    return True


def _launch_pointer(library_path: str):
    """(ctypes handle, the library's ``__TVMBackendParallelLaunch`` pointer), or None where the
    library is not loaded from that path, lacks the pool or has no parallel kernel."""
    try:
        library = ctypes.CDLL(library_path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
    except OSError:
        return None
    if not hasattr(library, "slimtvm_parallel_launch"):
        return None
    try:
        return library, ctypes.c_void_p.in_dll(library, "__TVMBackendParallelLaunch")
    except ValueError:  # no parallel kernel
        return None


def set_threads(threads: int) -> None:
    """Use ``threads`` threads in slimtvm's pool from the next parallel loop on (in libraries
    attached now or later)."""
    global _threads
    with _lock:
        _threads = int(threads)
        if _shared is not None:
            _shared.slimtvm_pool_set_threads(ctypes.c_int(_threads))


def benches() -> int | None:
    """How many times slimtvm's pool has benched a worker whose core another process held (twice
    within 100 ms the caller waited on its task, claimed that long before, longer than on its own
    share and over 200 µs); None before any library is attached."""
    with _lock:
        if _shared is None:
            return None
        _shared.slimtvm_pool_benches.restype = ctypes.c_long
        return int(_shared.slimtvm_pool_benches())


def launch_address() -> int | None:
    """Where slimtvm's ``slimtvm_parallel_launch`` (the one the attached libraries call) starts;
    None before any library is attached."""
    with _lock:
        return None if _shared is None else ctypes.cast(_shared.slimtvm_parallel_launch, ctypes.c_void_p).value


def pool_threads() -> int | None:
    """The threads slimtvm's pool uses now; None before any library is attached."""
    with _lock:
        return None if _shared is None else int(_shared.slimtvm_pool_threads())
