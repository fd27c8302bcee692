"""A compiled artifact loads and runs where only TVM's runtime is installed, as on a board.

The test builds such an installation: a copy of the ``tvm`` and ``tvm_ffi`` packages (files
linked, not copied) without ``libtvm_compiler.so``, ahead of everything else on ``sys.path``, and
runs slimtvm's runtime there in a fresh Python. The outputs are compared with onnxruntime.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tvm

import slimtvm
from slimtvm.runtime.bench import onnxruntime_session

EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "examples")
SRC = os.path.join(os.path.dirname(__file__), "..", "src")
COMPILER_LIBRARY = "libtvm_compiler.so"


def _runtime_only_site(destination: str) -> str:
    """``destination`` holding tvm and tvm_ffi as installed here, less the compiler library."""
    import tvm_ffi

    for package in (tvm, tvm_ffi):
        root = os.path.dirname(package.__file__)
        target_root = os.path.join(destination, os.path.basename(root))
        for folder, _, files in os.walk(root):
            if "__pycache__" in folder:
                continue
            target = os.path.join(target_root, os.path.relpath(folder, root))
            os.makedirs(target, exist_ok=True)
            for name in files:
                if name != COMPILER_LIBRARY:
                    os.symlink(os.path.join(folder, name), os.path.join(target, name))
    return destination


def test_an_artifact_runs_with_the_runtime_alone(tmp_path):
    model = os.path.join(EXAMPLES, "digits_cnn.onnx")
    library = str(tmp_path / "cnn.so")
    slimtvm.compile(model, library)
    images = np.load(os.path.join(EXAMPLES, "digits_test.npz"))["images"][:4].astype(np.float32)
    inputs = str(tmp_path / "inputs.npy")
    np.save(inputs, images)
    site = _runtime_only_site(str(tmp_path / "site"))
    assert not any(COMPILER_LIBRARY in files for _, _, files in os.walk(site))
    script = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        from slimtvm.runtime.artifact import load
        import tvm
        assert "{site}" in tvm.__file__, tvm.__file__
        try:
            tvm.get_global_func("relax.build")
            sys.exit("the compiler is loaded")
        except Exception:
            pass
        images = np.load("{inputs}")
        model = load("{library}")
        outputs = [next(iter(model.run({{"image": image[None]}}).values())) for image in images]
        np.save("{tmp_path}/outputs.npy", np.concatenate(outputs))
        print("loaded modules:", sorted(name for name in sys.modules if name.startswith(("slimtvm", "onnx"))))
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([site, SRC]))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = result.stdout.split("loaded modules:")[1]
    assert "onnx" not in loaded.replace("slimtvm", "") and "slimtvm.compiler" not in loaded and "slimtvm.lowering" not in loaded, loaded
    session = onnxruntime_session(model, threads=1)
    expected = np.concatenate([session.run(None, {"image": image[None]})[0] for image in images])
    outputs = np.load(tmp_path / "outputs.npy")
    np.testing.assert_allclose(outputs, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


@pytest.fixture(autouse=True)
def _needs_compiler_library_here():
    if not os.path.exists(os.path.join(os.path.dirname(tvm.__file__), "lib", COMPILER_LIBRARY)):
        pytest.skip("this TVM has no separate compiler library to leave out")
