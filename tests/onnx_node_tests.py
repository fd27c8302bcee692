"""ONNX's backend node tests (one small model per operator case, with inputs and expected outputs)
as a coverage check: what plain TVM 0.27 compiles and computes correctly, slimtvm must too.

The onnx wheel the project installs leaves the ``node`` folder out; onnx 1.16.2's wheel ships
1,282 cases. :func:`node_test_root` downloads that wheel once with pip (as data: it is unzipped
into a cache, never installed) and returns the folder.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
import onnx
from onnx import numpy_helper

ONNX_WITH_NODE_TESTS = "onnx==1.16.2"
CACHE = os.path.join(os.path.expanduser("~"), ".cache", "slimtvm", "onnx-1.16.2-node-tests")
PREFIX = "onnx/backend/test/data/node/"
TOLERANCE = 1e-4  # relative, as everywhere; integer and boolean outputs must be equal


def node_test_root() -> str:
    """The folder holding one sub-folder per node test case (downloaded on first use)."""
    if not os.path.isdir(CACHE):
        with tempfile.TemporaryDirectory() as scratch:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", ONNX_WITH_NODE_TESTS, "-d", scratch],
                check=True,
                timeout=600,
            )
            (wheel,) = glob.glob(os.path.join(scratch, "onnx-*.whl"))
            staging = CACHE + ".partial"
            with zipfile.ZipFile(wheel) as archive:
                for name in archive.namelist():
                    if name.startswith(PREFIX) and not name.endswith("/"):
                        target = os.path.join(staging, name[len(PREFIX) :])
                        os.makedirs(os.path.dirname(target), exist_ok=True)
                        with archive.open(name) as source, open(target, "wb") as handle:
                            handle.write(source.read())
            os.replace(staging, CACHE)
    return CACHE


def case_names() -> list:
    return sorted(name for name in os.listdir(node_test_root()) if os.path.exists(os.path.join(node_test_root(), name, "model.onnx")))


def load_case(name: str) -> tuple:
    """(model path, {input name: array}, [expected output arrays]) of test_data_set_0."""
    folder = os.path.join(node_test_root(), name)
    model = onnx.load(os.path.join(folder, "model.onnx"))
    data = os.path.join(folder, "test_data_set_0")

    def tensors(prefix):
        paths = sorted(glob.glob(os.path.join(data, f"{prefix}_*.pb")), key=lambda p: int(p.rsplit("_", 1)[1][:-3]))
        return [numpy_helper.to_array(onnx.load_tensor(path)) for path in paths]

    initializers = {init.name for init in model.graph.initializer}
    names = [value.name for value in model.graph.input if value.name not in initializers]
    inputs = tensors("input")
    if len(inputs) != len(names):
        raise ValueError(f"{len(inputs)} input files for {len(names)} inputs")
    return os.path.join(folder, "model.onnx"), dict(zip(names, inputs)), tensors("output")


def outputs_match(outputs: list, expected: list) -> str | None:
    """None when every output matches its expected array, else why not."""
    if len(outputs) != len(expected):
        return f"{len(outputs)} outputs, {len(expected)} expected"
    for index, (ours, theirs) in enumerate(zip(outputs, expected)):
        ours, theirs = np.asarray(ours), np.asarray(theirs)
        if ours.shape != theirs.shape:
            return f"output {index}: shape {list(ours.shape)}, expected {list(theirs.shape)}"
        if theirs.dtype.kind in "biu" or theirs.dtype == object:
            if not np.array_equal(ours, theirs):
                return f"output {index}: integer values differ"
            continue
        ours64, theirs64 = ours.astype(np.float64), theirs.astype(np.float64)
        if not np.array_equal(np.isnan(ours64), np.isnan(theirs64)):
            return f"output {index}: NaN positions differ"
        finite = np.isfinite(theirs64)
        if not np.array_equal(ours64[~finite & ~np.isnan(theirs64)], theirs64[~finite & ~np.isnan(theirs64)]):
            return f"output {index}: infinities differ"
        scale = float(np.max(np.abs(theirs64[finite]))) if finite.any() else 0.0
        diff = float(np.max(np.abs(ours64[finite] - theirs64[finite]))) if finite.any() else 0.0
        if diff > TOLERANCE * max(scale, 1e-30) and diff > 0:
            return f"output {index}: relative difference {diff / max(scale, 1e-30):.1e}"
    return None


def run_plain_tvm(model_path: str, inputs: dict, tvm_target) -> list:
    """Outputs of TVM's own ONNX import and default pipeline (no slimtvm)."""
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    mod = from_onnx(onnx.load(model_path), shape_dict={name: list(array.shape) for name, array in inputs.items()})
    vm = relax.VirtualMachine(tvm.compile(mod, target=tvm_target), tvm.cpu())
    result = vm["main"](*[tvm.runtime.tensor(array) for array in inputs.values()])
    return [result.numpy()] if hasattr(result, "numpy") else [item.numpy() for item in result]


def run_slimtvm(model_path: str, inputs: dict, target: str, workdir: str) -> list:
    """Outputs of slimtvm's compile and runtime, in the manifest's output order."""
    import slimtvm

    shapes = {name: tuple(array.shape) for name, array in inputs.items()}
    artifact = slimtvm.compile(model_path, os.path.join(workdir, "model.so"), target=target, input_shapes=shapes)
    model = artifact.load()
    outputs = model.run(inputs)
    return [outputs[name] for name in model.output_names]


def evaluate(name: str, target: str = "host") -> dict:
    """``{"case", "plain", "slimtvm"}``: "match", or the first line of why not, for both."""
    from slimtvm.errors import first_line
    from slimtvm.targets.presets import resolve_target

    result = {"case": name}
    try:
        model_path, inputs, expected = load_case(name)
    except Exception as err:  # noqa: BLE001 - a case this harness cannot read
        return {**result, "plain": f"unreadable: {first_line(err)}", "slimtvm": f"unreadable: {first_line(err)}"}
    for engine, run in (
        ("plain", lambda: run_plain_tvm(model_path, inputs, resolve_target(target).tvm_target())),
        ("slimtvm", lambda: run_slimtvm(model_path, inputs, target, workdir)),
    ):
        with tempfile.TemporaryDirectory() as workdir:
            try:
                result[engine] = outputs_match(run(), expected) or "match"
            except Exception as err:  # noqa: BLE001 - record, do not stop the suite
                result[engine] = f"{type(err).__name__}: {first_line(err)}"[:300]
    return result
