"""lowering/storage_by_shape.py: after TVM's memory planner, a kernel's output moves to a free
planned storage whose last occupant had its shape; never onto memory that is still in use."""

from __future__ import annotations

import json

import pytest
from conftest import assert_outputs_match, onnxruntime_outputs
from onnx_builders import GraphBuilder, digits_like_input

import slimtvm

KERNEL_AND_MAIN = """
@I.ir_module
class Module:
    @T.prim_func
    def copy(a: T.Buffer((64,), "float32"), b: T.Buffer((64,), "float32")):
        for i in range(64):
            b[i] = a[i]

    @T.prim_func
    def copy_rows(a: T.Buffer((64,), "float32"), b: T.Buffer((4, 16), "float32")):
        for i, j in T.grid(4, 16):
            b[i, j] = a[i * 16 + j]

    @T.prim_func
    def flat(a: T.Buffer((4, 16), "float32"), b: T.Buffer((64,), "float32")):
        for i in range(64):
            b[i] = a[i // 16, i % 16]

    @R.function
    def main(x: R.Tensor((64,), "float32")) -> R.Tensor((64,), "float32"):
        R.func_attr({"relax.force_pure": True})
        cls = Module
        s1: R.Any = R.memory.alloc_storage(R.shape([256]), 0, R.str("global"), R.dtype("float32"))
        s2: R.Any = R.memory.alloc_storage(R.shape([256]), 0, R.str("global"), R.dtype("float32"))
        s3: R.Any = R.memory.alloc_storage(R.shape([256]), 0, R.str("global"), R.dtype("float32"))
        a: R.Tensor((64,), "float32") = R.memory.alloc_tensor(s1, 0, R.shape([64]), R.dtype("float32"), 0)
        cls.copy(x, a)
        b: R.Tensor((4, 16), "float32") = R.memory.alloc_tensor(s2, 0, R.shape([4, 16]), R.dtype("float32"), 0)
        cls.copy_rows(a, b)
        c: R.Tensor((64,), "float32") = R.memory.alloc_tensor(s3, 0, R.shape([64]), R.dtype("float32"), 0)
        cls.flat(b, c)
        d: R.Tensor((4, 16), "float32") = R.memory.alloc_tensor(s1, 0, R.shape([4, 16]), R.dtype("float32"), 0)
        cls.copy_rows(c, d)
        e: R.Tensor((64,), "float32") = R.builtin.alloc_tensor(R.shape([64]), R.dtype("float32"), 0)
        cls.flat(d, e)
        return e
"""


def _main(source: str):
    from tvm.script import from_source
    from tvm.script import ir as I  # noqa: N812  (TVMScript's own names)
    from tvm.script import relax as R  # noqa: N812
    from tvm.script import tirx as T  # noqa: N812

    return from_source(source, extra_vars={"I": I, "R": R, "T": T})["main"]


def _storages(func) -> dict:
    """Tensor name → the storage variable its alloc_tensor names (read from the printed IR)."""
    found = {}
    for line in func.script().splitlines():
        if "R.memory.alloc_tensor(" in line:
            name = line.split(":")[0].strip()
            found[name] = line.split("R.memory.alloc_tensor(")[1].split(",")[0]
    return found


def test_a_kernel_output_moves_to_the_free_storage_its_shape_last_held():
    """``d`` (4 × 16) was planned into ``s1``, last written as the flat ``a``; ``s2`` last held
    ``b`` (4 × 16), which nothing reads once ``c`` is written: ``d`` moves there."""
    from slimtvm.lowering.storage_by_shape import repick_function

    func = _main(KERNEL_AND_MAIN)
    moved_func, moved = repick_function(func)
    assert moved == 1
    assert _storages(func)["d"] == "s1"
    assert _storages(moved_func) == {"a": "s1", "b": "s2", "c": "s3", "d": "s2"}


def test_a_storage_read_later_is_not_taken():
    """``b`` read again after ``d`` is written: ``s2`` is not free, nothing moves."""
    from slimtvm.lowering.storage_by_shape import repick_function

    func = _main(KERNEL_AND_MAIN.replace("cls.flat(d, e)", "cls.flat(d, e)\n        cls.flat(b, e)"))
    same, moved = repick_function(func)
    assert moved == 0 and same.same_as(func)


def test_a_storage_taken_again_while_the_output_lives_is_not_taken():
    """``s2`` holds another tensor ``f`` from before ``d``'s last read: ``d`` stays in ``s1``."""
    from slimtvm.lowering.storage_by_shape import repick_function

    source = KERNEL_AND_MAIN.replace(
        "cls.flat(d, e)",
        'f: R.Tensor((64,), "float32") = R.memory.alloc_tensor(s2, 0, R.shape([64]), R.dtype("float32"), 0)\n'
        "        cls.copy(c, f)\n        cls.flat(d, e)\n        cls.copy(f, e)",
    )
    _, moved = repick_function(_main(source))
    assert moved == 0


def test_a_view_keeps_its_storage_alive():
    """``b`` reshaped right after it is written and the view read after ``d`` is written: the
    view keeps ``b``'s storage in use, so ``d`` does not move onto it."""
    from slimtvm.lowering.storage_by_shape import repick_function

    source = KERNEL_AND_MAIN.replace(
        "cls.flat(b, c)",
        'cls.flat(b, c)\n        v: R.Tensor((4, 16), "float32") = R.reshape(b, R.shape([4, 16]))',
    ).replace("cls.flat(d, e)", "cls.flat(d, e)\n        cls.flat(v, e)")
    _, moved = repick_function(_main(source))
    assert moved == 0


def test_a_call_whose_result_is_read_is_not_followed():
    """A call to another Relax function that hands ``b`` back, its result read after ``d`` is
    written: what it returns may be ``b``, so the pass leaves the function as planned."""
    from slimtvm.lowering.storage_by_shape import repick_function

    source = KERNEL_AND_MAIN.replace(
        "    @R.function\n    def main(",
        '    @R.function\n    def same(t: R.Tensor((4, 16), "float32")) -> R.Tensor((4, 16), "float32"):\n        return t\n\n    @R.function\n    def main(',
    )
    source = source.replace("cls.flat(b, c)", "cls.flat(b, c)\n        r = cls.same(b)").replace("cls.flat(d, e)", "cls.flat(d, e)\n        cls.flat(r, e)")
    func = _main(source)
    same, moved = repick_function(func)
    assert moved == 0 and same.same_as(func)


def _two_stage_residual_net():
    """Bi-Real Net 18's second stage in float, small: four residual 3 × 3 blocks at 16 × 16, a
    downsampling block (average pool + 1 × 1 conv beside a 3 × 3 stride-2 conv), three residual
    blocks at 8 × 8, a global mean. The memory planner gives one 8 × 8 output the storage last
    held by a 16 × 16 image while another 8 × 8 one's is free."""
    g = GraphBuilder(seed=48)
    x = g.input([1, 16, 16, 16])
    h = g.relu(g.conv(x, 16, 16, pads=(1, 1, 1, 1)))
    for _ in range(4):
        h = g.node("Add", [g.relu(g.conv(h, 16, 16, pads=(1, 1, 1, 1))), h])
    shortcut = g.conv(g.node("AveragePool", [h], kernel_shape=[2, 2], strides=[2, 2]), 16, 32, kernel=1)
    h = g.node("Add", [g.relu(g.conv(h, 16, 32, stride=2, pads=(1, 1, 1, 1))), shortcut])
    for _ in range(3):
        h = g.node("Add", [g.relu(g.conv(h, 32, 32, pads=(1, 1, 1, 1))), h])
    return g.model(g.node("GlobalAveragePool", [h]))


@pytest.mark.parametrize("preset", ["x86-64", "host"])
def test_moved_storages_match_onnxruntime(tmp_path, preset):
    """The network above: the pass moves at least one output (the manifest says how many) and
    the artifact still matches onnxruntime, on every x86 kernel variant the host runs."""
    from conftest import x86_kernel_presets

    if preset not in x86_kernel_presets():
        pytest.skip(f"{preset} kernels do not run on this host")
    model = _two_stage_residual_net()
    inputs = {"x": digits_like_input((1, 16, 16, 16), seed=49)}
    artifact = slimtvm.compile(model, str(tmp_path / "model.so"), target=preset)
    manifest = json.loads(open(artifact.manifest_path).read())
    passes = {entry["name"]: entry for entry in manifest["passes"]}
    assert passes["storage_by_shape"]["moved"] >= 1, passes["storage_by_shape"]
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
