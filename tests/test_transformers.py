"""Vision transformers (timm's ViT / DeiT export): the token matmuls and both attention products
run slimtvm's GEMM kernel (schedules/dense.py), the attention on keys padded to whole vectors
(lowering/matmul_columns.py), softmax and layer norms as row kernels (schedules/row_reductions.py);
outputs as onnxruntime's. Before, every matmul ran on TVM's generic schedule (DeiT-Tiny 63×
onnxruntime's time)."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from conftest import assert_outputs_match, onnxruntime_outputs, x86_kernel_presets
from onnx_builders import GraphBuilder

import slimtvm

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

from architectures import vision_transformer  # noqa: E402


def _inputs(shape, seed=3):
    return {"input": np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}


@pytest.mark.parametrize("preset", x86_kernel_presets())
def test_a_small_vit_runs_on_slimtvm_kernels_and_matches_onnxruntime(tmp_path, preset):
    """17 tokens (16 patches and the class token: a partial vector of keys and a partial register
    tile of rows on both builds), 2 blocks of 2 heads."""
    from slimtvm.compiler.layer_table import decisions_from_manifest, layer_rows

    model = vision_transformer(seed=7, image=32, patch=8, dim=32, depth=2, heads=2, classes=10)
    inputs = _inputs([1, 3, 32, 32])
    artifact = slimtvm.compile(model, str(tmp_path / "vit.so"), target=preset)
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
    passes = {entry["name"]: entry for entry in artifact.manifest["passes"]}
    assert passes["matmul_columns"] == {"name": "matmul_columns", "attentions": 2, "products": 0}
    assert passes["kernels"]["generic_fallbacks"] == [], passes["kernels"]
    rows = layer_rows(model, decisions_from_manifest(artifact.manifest))  # what `slimtvm inspect` prints
    matmuls = [row.plan for row in rows if row.op == "MatMul"]
    assert len(matmuls) == 12 and all(plan == "fp32 matmul, GEMM kernel (register tiles)" for plan in matmuls), matmuls


def _attention_model(tokens: int, heads: int, head_dim: int, between: str, weights_out: bool = False):
    """One attention on a [1, tokens, heads·head_dim] input: q, k, v by MatMuls, q · kᵀ, then
    ``between`` ("scale": × d^-½; "divide": ÷ √d then + 1; "mask": + a [tokens]-long constant row
    of 0 and −1e4, which the padded form refuses), Softmax, · v."""
    g = GraphBuilder(seed=tokens + heads)
    dim = heads * head_dim
    x = g.input([1, tokens, dim], name="input")

    def project():
        y = g.node("MatMul", [x, g.const(g.rng.standard_normal((dim, dim)) / np.sqrt(dim), "w")])
        y = g.node("Reshape", [y, g.const(np.array([1, tokens, heads, head_dim]), "shape", np.int64)])
        return g.node("Transpose", [y], perm=[0, 2, 1, 3])

    q, k, v = project(), project(), project()
    scores = g.node("MatMul", [q, g.node("Transpose", [k], perm=[0, 1, 3, 2])])
    if between == "scale":
        scores = g.node("Mul", [scores, g.const(np.float32(head_dim**-0.5), "scale")])
    elif between == "divide":
        scores = g.node("Add", [g.node("Div", [scores, g.const(np.float32(np.sqrt(head_dim)), "root")]), g.const(np.float32(1.0), "one")])
    else:
        mask = np.where(np.arange(tokens) % 3 == 0, -1e4, 0.0)
        scores = g.node("Add", [scores, g.const(mask, "mask")])
    weights = g.node("Softmax", [scores], axis=-1)
    out = g.node("MatMul", [weights, v])
    return g.model([out, weights] if weights_out else out)


@pytest.mark.parametrize("preset", x86_kernel_presets())
@pytest.mark.parametrize(
    ("tokens", "between", "weights_out", "attentions", "products"),
    [
        (50, "scale", False, 1, 0),  # keys padded to 64 (AVX-512) / 56 (AVX2)
        (37, "divide", False, 1, 0),  # the score divided, then a constant added
        (37, "mask", False, 0, 1),  # a mask row: the product alone padded, its columns sliced back
        (37, "scale", True, 0, 1),  # the attention weights are an output too: sliced back
        (64, "scale", False, 0, 0),  # whole vectors already
    ],
)
def test_attention_products_run_on_whole_vectors_of_keys(tmp_path, preset, tokens, between, weights_out, attentions, products):
    model = _attention_model(tokens, heads=3, head_dim=16, between=between, weights_out=weights_out)
    inputs = _inputs([1, tokens, 48], seed=tokens)
    artifact = slimtvm.compile(model, str(tmp_path / "attention.so"), target=preset)
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
    passes = {entry["name"]: entry for entry in artifact.manifest["passes"]}
    assert (passes["matmul_columns"]["attentions"], passes["matmul_columns"]["products"]) == (attentions, products)
    assert passes["kernels"]["generic_fallbacks"] == [], passes["kernels"]


@pytest.mark.parametrize("preset", x86_kernel_presets())
@pytest.mark.parametrize(
    ("left", "right"),
    [
        ([1, 197, 48], [48, 80]),  # rows past the last whole tile; 5 vectors of 16 (4 of 8 ... 10 of 8)
        ([2, 3, 37, 24], [2, 3, 24, 32]),  # batch axes on both sides
        ([5, 40], [40, 64]),  # few rows: the classifier's forms
        ([64, 40], [40, 24]),  # 64 rows of a 2-D product: the GEMM form; 24 columns: padded as a constant
    ],
)
def test_matmuls_of_every_shape_match_onnxruntime(tmp_path, preset, left, right):
    """MatMul + Add (a fused epilogue) with a constant right operand, against onnxruntime."""
    g = GraphBuilder(seed=len(left) + left[-2])
    x = g.input(left, name="input")
    y = g.node("MatMul", [x, g.const(g.rng.standard_normal(right) / np.sqrt(right[-2]), "w")])
    model = g.model(g.node("Add", [y, g.const(g.rng.standard_normal(right[-1]), "b")]))
    inputs = _inputs(left, seed=left[-1])
    artifact = slimtvm.compile(model, str(tmp_path / "matmul.so"), target=preset)
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
    passes = {entry["name"]: entry for entry in artifact.manifest["passes"]}
    assert passes["kernels"]["generic_fallbacks"] == [] and passes["kernels"]["by_family"].get("dense", 0) >= 1, passes["kernels"]


@pytest.mark.parametrize("preset", x86_kernel_presets())
@pytest.mark.parametrize(("op", "length"), [("softmax", 208), ("softmax", 197), ("layer_norm", 192), ("layer_norm", 40)])
def test_row_kernels_take_softmax_and_layer_norm_and_match_numpy(preset, op, length):
    """The row rule schedules the legalized op (whole vectors or a scalar tail), and the built
    kernel computes what numpy computes."""
    import tvm
    from tvm import relax, s_tir, tirx

    from slimtvm.lowering.legalizations import LEGALIZATIONS
    from slimtvm.schedules.row_reductions import RowReductions
    from slimtvm.targets.presets import resolve_target, simd_lanes

    target = resolve_target(preset).tvm_target()
    lanes = simd_lanes(target)
    rng = np.random.default_rng(length)
    data = (rng.standard_normal((3, 11, length)) * 4).astype(np.float32)
    gamma, beta = rng.standard_normal(length).astype(np.float32), rng.standard_normal(length).astype(np.float32)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(list(data.shape), "float32"))
    with bb.function("main", [x]):
        if op == "softmax":
            out = bb.emit(relax.op.nn.softmax(x, axis=-1))
            expected = np.exp(data - data.max(-1, keepdims=True))
            expected /= expected.sum(-1, keepdims=True)
        else:
            out = bb.emit(relax.op.nn.layer_norm(x, relax.const(gamma), relax.const(beta), axes=[-1], epsilon=1e-6))
            mean = data.mean(-1, keepdims=True)
            expected = (data - mean) / np.sqrt(((data - mean) ** 2).mean(-1, keepdims=True) + 1e-6) * gamma + beta
        bb.emit_func_output(out)
    mod = relax.transform.LegalizeOps(dict(LEGALIZATIONS))(bb.get())
    (name,) = [gvar for gvar, func in mod.functions.items() if isinstance(func, tirx.PrimFunc)]
    scheduled = RowReductions(lanes).schedule(s_tir.Schedule(mod[name]))
    assert scheduled is not None
    mod[name] = scheduled.mod["main"].with_attr("tirx.is_scheduled", True)
    vm = relax.VirtualMachine(tvm.compile(mod, target=target), tvm.cpu())
    ours = vm["main"](tvm.runtime.tensor(data)).numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)
