"""Load and run a slimtvm artifact with TVM's runtime alone (this module runs on the target board).

Imports only numpy, the standard library and ``tvm.runtime`` — never TVM's compiler, onnx or
onnxruntime — so it works with a runtime-only TVM install.
"""

from __future__ import annotations

import os
import platform
import shutil
import tempfile
import threading

import numpy as np

from ..errors import SlimError, first_line
from . import claiming_pool
from .manifest import read_manifest, verify_library


def _host_arch() -> str:
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def _converted(name: str, array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``array`` as ``dtype``, with a notice: floats are rounded to a narrower float; any other
    conversion must keep every value (int64 → float32 of small integers, bool → float32), else
    it is refused."""
    import warnings

    if array.dtype.kind == "f" and dtype.kind == "f":
        warnings.warn(f"input {name!r} is {array.dtype}: rounded to the model's {dtype}", stacklevel=3)
        return array.astype(dtype)
    if array.dtype.kind not in "biuf" or dtype.kind not in "biuf":
        raise SlimError(f"input {name!r} has dtype {array.dtype}; the model takes {dtype}")
    with np.errstate(invalid="ignore", over="ignore"):
        converted = array.astype(dtype)
        exact = np.array_equal(converted.astype(array.dtype), array)
    if not exact:
        raise SlimError(f"input {name!r} has dtype {array.dtype}; converting it to the model's {dtype} would change its values")
    warnings.warn(f"input {name!r} is {array.dtype}: converted to the model's {dtype} (every value kept)", stacklevel=3)
    return converted


def use_all_cores_by_default() -> None:
    """Let TVM's thread pool use every physical core unless ``TVM_NUM_THREADS`` says otherwise.

    TVM sizes its pool once, from ``TVM_NUM_THREADS`` or else half the logical CPUs (it assumes
    two hardware threads per core), and never grows it later. On machines without SMT — this
    project's 2-core VMs among them — that halves the usable cores. Must run before the first
    parallel kernel; ``import slimtvm`` calls it.
    """
    if "TVM_NUM_THREADS" in os.environ:
        return
    cores = None
    try:
        import psutil

        cores = psutil.cpu_count(logical=False)
    except ImportError:  # runtime-only board without psutil
        pass
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    os.environ["TVM_NUM_THREADS"] = str(max(1, min(cores or available, available)))


TVM_POOL_SPIN_COUNT = 2000  # TVM's default 300,000: its idle workers spin ~150 ms (Zen 4 VM)


def short_tvm_pool_spin_by_default() -> None:
    """Let TVM's own thread pool's idle workers spin briefly, unless ``TVM_THREAD_POOL_SPIN_COUNT``
    says otherwise.

    slimtvm's artifacts run on slimtvm's pool (``claiming_pool.py``); TVM's serves only other
    kernels (older artifacts, benchmarks' probes). With TVM's default, its workers — pinned to
    cores — spin about 150 ms after the pool starts (at :func:`set_num_threads`) and after each of
    its loops, and a worker of slimtvm's pool that shares a core with one barely runs: Bi-Real
    Net 18 ran at its 1-thread speed for the first 150 ms after ``set_num_threads(2)`` (session
    47). With 2,000 TVM's workers still spin through the gaps between one model's kernels. TVM
    reads the variable once, when its pool starts; ``import slimtvm`` calls this first."""
    os.environ.setdefault("TVM_THREAD_POOL_SPIN_COUNT", str(TVM_POOL_SPIN_COUNT))


def set_num_threads(threads: int) -> None:
    """Run kernels on ``threads`` threads: TVM's runtime thread pool and the pool of every slimtvm
    artifact loaded now or later (``claiming_pool.py``). Refuses ``threads`` < 1."""
    import tvm.runtime

    if int(threads) < 1:
        raise SlimError(f"thread count must be at least 1, not {threads}")
    config = tvm.get_global_func("runtime.config_threadpool")
    # TVM pins the *calling* thread to one core when it sets up its pool; every thread the
    # application starts later (onnxruntime's pool, say) would inherit that single core. Give the
    # caller its CPU set back; TVM's own workers stay pinned. (Pinning the caller to the core the
    # workers leave free, for each run only, measured no faster: ResNet-18 at 2 threads 14.09
    # against 13.95 ms, medians of 15 rounds in turns, Emerald Rapids, session 40.)
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    config(1, int(threads))  # mode 1: the "big" cores, i.e. all cores on a uniform CPU
    if affinity is not None:
        os.sched_setaffinity(0, affinity)
    claiming_pool.set_threads(int(threads))  # the pool slimtvm's artifacts run on (runtime/claiming_pool.py)


# realpath → sha256 of the library that dlopen() mapped under that path in this process. dlopen
# hands back that same mapping whenever it sees the path again, even after the file was replaced,
# so a recompiled artifact at the same path would silently run the old code.
_MAPPED_BY_PATH: dict = {}


def _loadable_path(library_path: str, sha256: str) -> str:
    """A path that makes dlopen load *this* file: the path itself, or a private copy if stale.

    (A symlink is not enough: the loader resolves it back to the stale path.)
    """
    real = os.path.realpath(library_path)
    mapped = _MAPPED_BY_PATH.setdefault(real, sha256)
    if mapped == sha256:
        return library_path
    alias = os.path.join(tempfile.mkdtemp(prefix="slimtvm-reload-"), f"{sha256[:16]}-{os.path.basename(real)}")
    shutil.copyfile(real, alias)  # removed again once loaded (see Model.__init__)
    return alias


class Model:
    """A loaded artifact: ``run()`` maps input names to arrays and returns outputs by name."""

    def __init__(self, library_path: str, manifest: dict, device=None):
        import tvm.runtime
        from tvm.runtime.vm import VirtualMachine

        self.library_path = library_path
        self.manifest = manifest
        self._device = device or tvm.runtime.cpu(0)
        loadable = _loadable_path(library_path, manifest["library"]["sha256"])
        try:
            library = tvm.runtime.load_module(loadable)
            self.claiming_pool = claiming_pool.attach(loadable)  # before the private copy goes: found by its path
        except Exception as err:
            raise SlimError(f"TVM cannot load {library_path}: {first_line(err)}") from None
        finally:
            if loadable != library_path:  # the private copy is mapped now; its file is not needed
                shutil.rmtree(os.path.dirname(loadable), ignore_errors=True)
        self._vm = VirtualMachine(library, self._device)
        self._main = self._vm["main"]
        self._staging = threading.local()  # per-thread input staging buffers (see _input_tensor)
        self._vm_lock = threading.Lock()  # TVM's VirtualMachine keeps its registers in the instance

    @property
    def input_names(self) -> list:
        return [entry["name"] for entry in self.manifest["inputs"]]

    @property
    def output_names(self) -> list:
        return [entry["name"] for entry in self.manifest["outputs"]]

    def check_inputs(self, inputs: dict) -> list:
        """The inputs as contiguous arrays in the manifest's order and dtypes.

        Refuses missing or unexpected names, wrong shapes, and dtypes that do not convert safely.
        """
        if not isinstance(inputs, dict):
            raise SlimError("inputs must be a dict mapping input names to arrays")
        expected = {entry["name"]: entry for entry in self.manifest["inputs"]}
        unknown = sorted(set(inputs) - set(expected))
        missing = [name for name in expected if name not in inputs]
        if missing or unknown:
            parts = []
            if missing:
                parts.append(f"missing {', '.join(map(repr, missing))}")
            if unknown:
                parts.append(f"unexpected {', '.join(map(repr, unknown))}")
            raise SlimError(f"inputs do not match the model: {'; '.join(parts)} (the model takes {', '.join(map(repr, expected))})")
        arrays = []
        for name, entry in expected.items():
            array = np.asarray(inputs[name])
            shape = tuple(entry["shape"])
            if array.shape != shape:
                raise SlimError(f"input {name!r} has shape {list(array.shape)}; the model was compiled for {list(shape)}")
            dtype = np.dtype(entry["dtype"])
            if array.dtype != dtype:
                array = _converted(name, array, dtype)
            arrays.append(array if array.flags.c_contiguous else np.ascontiguousarray(array))  # ascontiguousarray makes 0-d arrays 1-d
        return arrays

    def to_device(self, inputs: dict) -> list:
        """Checked inputs as new TVM tensors (copies), for timing loops that exclude the copy."""
        import tvm.runtime

        return [tvm.runtime.tensor(array, self._device) for array in self.check_inputs(inputs)]

    def run_device(self, tensors: list):
        """Run on already-converted tensors; returns TVM's raw result.

        Calls from several threads take turns: TVM's VirtualMachine is not reentrant (two calls at
        once failed with "run into invalid section"). Threads that should run at the same time
        each load the artifact (every :func:`load` makes its own VirtualMachine)."""
        with self._vm_lock:
            return self._main(*tensors)

    def run(self, inputs: dict) -> dict:
        """Run the model on ``inputs`` (name → array) and return ``{output name: ndarray}``.

        A writeable input whose buffer is 64-byte aligned (what TVM's kernels assume; see
        :func:`aligned_array`) is passed without a copy; any other is copied into a staging
        buffer this thread reuses. Outputs never alias an input.
        """
        arrays = self.check_inputs(inputs)
        tensors = [self._input_tensor(index, array) for index, array in enumerate(arrays)]
        result = self.run_device(tensors)
        outputs = [result] if hasattr(result, "numpy") else list(result)
        if len(outputs) != len(self.output_names):
            raise SlimError(f"the library returned {len(outputs)} outputs, the manifest lists {len(self.output_names)}")
        input_addresses = {_data_address(tensor) for tensor in tensors}
        return {name: _as_numpy(tensor, copy=_data_address(tensor) in input_addresses) for name, tensor in zip(self.output_names, outputs)}

    def _input_tensor(self, index: int, array: np.ndarray):
        """``array`` as a TVM tensor: zero-copy when aligned, else copied into a reused staging buffer."""
        import tvm.runtime

        if self._device.dlpack_device_type() != 1:  # not the CPU: TVM copies to the device
            return tvm.runtime.tensor(array, self._device)
        if array.ctypes.data % TVM_ALIGNMENT == 0 and array.size and array.flags.writeable:  # DLPack refuses read-only arrays
            return tvm.runtime.from_dlpack(array)
        staging = getattr(self._staging, "buffers", None)
        if staging is None:
            staging = self._staging.buffers = {}
        buffer = staging.get(index)
        if buffer is None or buffer.shape != array.shape or buffer.dtype != array.dtype:
            # fresh allocations of large buffers page-fault on every call; reuse one per input
            buffer = staging[index] = aligned_array(array.shape, array.dtype)
        np.copyto(buffer, array)
        return tvm.runtime.from_dlpack(buffer) if buffer.size else tvm.runtime.tensor(buffer, self._device)

    def random_inputs(self, seed: int = 0) -> dict:
        """Inputs of the manifest's shapes and dtypes: standard normal floats, small integers
        (0 or 1 for an input named like a mask: an attention mask of other values scales the
        scores by thousands, where float32 rounding alone moves the outputs)."""
        rng = np.random.default_rng(seed)
        made = {}
        for entry in self.manifest["inputs"]:
            dtype = np.dtype(entry["dtype"])
            if np.issubdtype(dtype, np.floating):
                made[entry["name"]] = rng.standard_normal(entry["shape"]).astype(dtype)
            elif dtype == np.bool_ or "mask" in entry["name"].lower():
                made[entry["name"]] = rng.integers(0, 2, entry["shape"]).astype(dtype)
            else:
                made[entry["name"]] = rng.integers(0, 10, entry["shape"]).astype(dtype)
        return made


def load(library_path: str) -> Model:
    """Load ``model.so`` with its ``model.json`` manifest.

    Refuses (``SlimError``) a missing library or manifest, a library whose sha256 differs from the
    manifest's, and a library built for another CPU architecture than this machine's.
    """
    library_path = os.fspath(library_path)
    if not os.path.isfile(library_path):
        raise SlimError(f"library not found: {library_path}")
    manifest = read_manifest(library_path)
    verify_library(library_path, manifest, _host_arch())
    return Model(library_path, manifest)


TVM_ALIGNMENT = 64  # bytes; TVM's tensors and its compiled kernels assume buffers aligned to this


def aligned_array(shape, dtype=np.float32) -> np.ndarray:
    """An uninitialised C-contiguous array whose data is 64-byte aligned, so that
    :meth:`Model.run` hands it to the library without a copy."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + TVM_ALIGNMENT, np.uint8)
    offset = (-raw.ctypes.data) % TVM_ALIGNMENT
    return raw[offset : offset + nbytes].view(dtype).reshape(shape)


def _data_address(tensor) -> int | None:
    """Where a TVM tensor's data starts (None for results that are not tensors)."""
    try:
        return int(tensor.data_ptr())
    except (AttributeError, TypeError):
        return None


def _as_numpy(tensor, copy: bool = False) -> np.ndarray:
    """A library output as a numpy array without a copy where DLPack allows (the array keeps the
    tensor alive; the VM allocates outputs per call), else a copy. Saves ~10 µs per 400 KB."""
    if copy:
        return tensor.numpy()
    try:
        return np.from_dlpack(tensor)
    except (TypeError, ValueError, RuntimeError, BufferError):
        return tensor.numpy()
