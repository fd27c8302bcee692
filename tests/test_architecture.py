"""The architecture holds as written: import contracts, and the worked example of docs/architecture.md.

- ``lint-imports`` passes on the package and fails on a copy where a pass imports a schedule.
- The "adding a kernel family" example, applied to a copy of the package exactly as the document
  gives it, changes the four files it names and no others, and the new family compiles an ONNX
  Softmax whose output matches onnxruntime.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import onnx
from onnx import TensorProto, helper

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
PACKAGE = os.path.join(ROOT, "src", "slimtvm")
LINT_IMPORTS = os.path.join(os.path.dirname(sys.executable), "lint-imports")


def _copy_package(destination) -> str:
    """A copy of src/slimtvm under ``destination``/src (no caches); returns the src folder."""
    src = os.path.join(destination, "src")
    shutil.copytree(PACKAGE, os.path.join(src, "slimtvm"), ignore=shutil.ignore_patterns("__pycache__"))
    return src


def _lint_imports(src: str):
    env = dict(os.environ, PYTHONPATH=src)
    return subprocess.run([LINT_IMPORTS, "--no-cache", os.path.join(ROOT, "pyproject.toml")], env=env, capture_output=True, text=True, timeout=300)


def test_import_contracts_hold():
    result = _lint_imports(os.path.join(ROOT, "src"))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def test_a_pass_importing_a_schedule_breaks_the_layers(tmp_path):
    src = _copy_package(tmp_path)
    with open(os.path.join(src, "slimtvm", "passes", "remove_dropout.py"), "a") as handle:
        handle.write("\nfrom ..schedules import stages  # noqa: E402,F401\n")
    result = _lint_imports(src)
    assert result.returncode != 0
    assert "slimtvm.passes.remove_dropout -> slimtvm.schedules.stages" in result.stdout, result.stdout[-2000:]


def _worked_example_steps() -> list:
    """(file, anchor or None, code) for each code block of the worked example, in order."""
    text = open(os.path.join(ROOT, "docs", "architecture.md"), encoding="utf-8").read()
    example = text[text.index("## Adding a kernel family") :]
    steps = []
    for info, code in re.findall(r"```python ([^\n]*)\n(.*?)```", example, flags=re.S):
        path = re.search(r"file=(\S+)", info).group(1)
        anchor = re.search(r'after="((?:[^"\\]|\\.)*)"', info)
        steps.append((path, anchor.group(1).replace('\\"', '"') if anchor else None, code))
    return steps


def _apply(steps, root: str) -> None:
    for path, anchor, code in steps:
        target = os.path.join(root, path)
        if anchor is None:
            assert not os.path.exists(target), f"{path} is meant to be new"
            with open(target, "w", encoding="utf-8") as handle:
                handle.write(code)
            continue
        lines = open(target, encoding="utf-8").read().splitlines(keepends=True)
        index = next(i for i, line in enumerate(lines) if anchor in line)
        lines[index + 1 : index + 1] = [code]
        with open(target, "w", encoding="utf-8") as handle:
            handle.write("".join(lines))


def _files(src: str) -> dict:
    found = {}
    for folder, _, names in os.walk(src):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                found[os.path.relpath(path, src)] = open(path, encoding="utf-8").read()
    return found


def _softmax_model(path: str) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 37])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 37])
    graph = helper.make_graph([helper.make_node("Softmax", ["x"], ["y"], axis=-1)], "softmax", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_the_worked_example_adds_a_kernel_family(tmp_path):
    steps = _worked_example_steps()
    named = {path for path, _, _ in steps}
    assert named == {
        "src/slimtvm/schedules/softmax_rows.py",
        "src/slimtvm/schedules/registry.py",
        "src/slimtvm/lowering/softmax_rows.py",
        "src/slimtvm/lowering/legalizations.py",
    }
    src = _copy_package(tmp_path)
    before = _files(src)
    _apply(steps, str(tmp_path))
    after = _files(src)
    changed = {os.path.join("src", path) for path in set(before) | set(after) if before.get(path) != after.get(path)}
    assert changed == named

    model = str(tmp_path / "softmax.onnx")
    _softmax_model(model)
    inputs = np.random.default_rng(0).standard_normal((4, 37)).astype(np.float32) * 4
    np.save(tmp_path / "x.npy", inputs)
    script = textwrap.dedent(
        f"""
        import numpy as np
        import slimtvm
        assert slimtvm.__file__.startswith("{src}"), slimtvm.__file__
        artifact = slimtvm.compile("{model}", "{tmp_path}/softmax.so", target="x86-64")
        out = artifact.load().run({{"x": np.load("{tmp_path}/x.npy")}})["y"]
        np.save("{tmp_path}/y.npy", out)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], env=dict(os.environ, PYTHONPATH=src), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.load(open(tmp_path / "softmax.json"))
    kernels = next(entry for entry in manifest["passes"] if entry["name"] == "kernels")
    assert kernels["by_family"] == {"softmax_rows": 1} and kernels["generic"] == 0, kernels

    import onnxruntime as ort

    expected = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, {"x": inputs})[0]
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-5, atol=1e-6)
