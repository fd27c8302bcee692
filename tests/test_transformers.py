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

from architectures import bert_mini, vision_transformer  # noqa: E402


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
    assert len(matmuls) == 12 and all(plan.startswith("fp32 matmul, GEMM kernel (register tiles)") for plan in matmuls), matmuls
    # the head (a Gemm on the class token: one row) by the matrix-vector kernel
    (head,) = [row.plan for row in rows if row.op == "Gemm"]
    assert head.startswith("fp32 dense, matrix-vector kernel (register tiles)"), head
    # the projections and the head by constant weights read them in column panels; q · kᵀ and · v do not
    assert sum("column panels" in plan for plan in [*matmuls, head]) == passes["packed_matmuls"]["packed"] == 9, matmuls


def _attention_model(tokens: int, heads: int, head_dim: int, between: str, weights_out: bool = False):
    """One attention on a [1, tokens, heads·head_dim] input: q, k, v by MatMuls, q · kᵀ, then
    ``between`` ("scale": × d^-½; "divide": ÷ √d then + 1; "mask": + a [tokens]-long constant row
    of 0 and −1e4; "input_mask": + a second input of shape [1, 1, 1, tokens], as BERT's mask;
    "full_bias": + a constant of the scores' own shape; "sdpa": torch's scaled dot-product
    attention export — q and kᵀ each × d^-¼, + ``Where(mask, 0, −∞)`` for a constant boolean mask
    of the scores' shape that masks the first query row whole, and ``Where(IsNaN(p), 0, p)`` after
    the softmax), Softmax, · v."""
    g = GraphBuilder(seed=tokens + heads)
    dim = heads * head_dim
    x = g.input([1, tokens, dim], name="input")

    def project():
        y = g.node("MatMul", [x, g.const(g.rng.standard_normal((dim, dim)) / np.sqrt(dim), "w")])
        y = g.node("Reshape", [y, g.const(np.array([1, tokens, heads, head_dim]), "shape", np.int64)])
        return g.node("Transpose", [y], perm=[0, 2, 1, 3])

    q, k, v = project(), project(), project()
    if between == "sdpa":
        root = g.const(np.float32(head_dim**-0.25), "root")
        q = g.node("Mul", [q, root])
        scores = g.node("MatMul", [q, g.node("Mul", [g.node("Transpose", [k], perm=[0, 1, 3, 2]), root])])
        keep = np.tril(np.ones((tokens, tokens), bool))
        keep[0] = False  # a query that sees no key: NaN from the softmax, 0 after the guard
        bias = g.node("Where", [g.const(keep, "keep", np.bool_), g.const(np.float32(0.0), "zero"), g.const(np.float32(-np.inf), "minus_inf")])
        weights = g.node("Softmax", [g.node("Add", [scores, bias])], axis=-1)
        weights = g.node("Where", [g.node("IsNaN", [weights]), g.const(np.float32(0.0), "guard"), weights])
        return g.model(g.node("MatMul", [weights, v]))
    scores = g.node("MatMul", [q, g.node("Transpose", [k], perm=[0, 1, 3, 2])])
    if between == "scale":
        scores = g.node("Mul", [scores, g.const(np.float32(head_dim**-0.5), "scale")])
    elif between == "divide":
        scores = g.node("Add", [g.node("Div", [scores, g.const(np.float32(np.sqrt(head_dim)), "root")]), g.const(np.float32(1.0), "one")])
    elif between == "mask":
        mask = np.where(np.arange(tokens) % 3 == 0, -1e4, 0.0)
        scores = g.node("Add", [scores, g.const(mask, "mask")])
    elif between == "input_mask":
        scores = g.node("Add", [scores, g.input([1, 1, 1, tokens], name="mask")])
    else:
        scores = g.node("Add", [scores, g.const(g.rng.standard_normal((1, heads, tokens, tokens)), "bias")])
    weights = g.node("Softmax", [scores], axis=-1)
    out = g.node("MatMul", [weights, v])
    return g.model([out, weights] if weights_out else out)


@pytest.mark.parametrize("preset", x86_kernel_presets())
@pytest.mark.parametrize(
    ("tokens", "between", "weights_out", "attentions", "products"),
    [
        (50, "scale", False, 1, 0),  # keys padded to 64 (AVX-512) / 56 (AVX2)
        (37, "divide", False, 1, 0),  # the score divided, then a constant added
        (37, "mask", False, 1, 0),  # a constant mask row, padded with the keys
        (37, "input_mask", False, 1, 0),  # a mask from an input, padded in the graph
        (37, "full_bias", False, 1, 0),  # a constant bias per score, padded with the keys
        (37, "sdpa", False, 1, 0),  # torch's export: a causal −∞ mask, one row all masked, the NaN guard
        (37, "scale", True, 0, 1),  # the attention weights are an output too: sliced back
        (64, "scale", False, 0, 0),  # whole vectors already
    ],
)
def test_attention_products_run_on_whole_vectors_of_keys(tmp_path, preset, tokens, between, weights_out, attentions, products):
    model = _attention_model(tokens, heads=3, head_dim=16, between=between, weights_out=weights_out)
    inputs = _inputs([1, tokens, 48], seed=tokens)
    if between == "input_mask":
        inputs["mask"] = np.where(np.arange(tokens) >= tokens - 5, -1e4, 0.0).astype(np.float32).reshape(1, 1, 1, tokens)
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
        ([1, 37, 1152], [1152, 512]),  # a prompt's few rows, a long reduction: row panels, blocks of 128, a partial row tile
        ([1, 40, 1376], [1376, 512]),  # Llama's down projection: the GEMM form, 10- or 5-row tiles, prefetching the next column group
        ([1, 41, 1376], [1376, 512]),  # 41 rows (no whole row tiles, no prefetch): row panels, blocks of 172 (no preferred block divides)
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


@pytest.mark.parametrize("preset", x86_kernel_presets())
def test_row_kernels_take_a_group_norms_statistics_and_match_numpy(preset):
    """MobileViTV2's group norm (one group) computes the variance of a whole ``[1, 1, C·H·W]`` row
    and its square root, a kernel whose result is one value per row: the row rule schedules it
    (before: one scalar chain over 131,072 values, twice), and it computes what numpy computes
    (in float64, to which the per-lane sums come closer than one chain did)."""
    import tvm
    from tvm import relax, s_tir, tirx

    from slimtvm.lowering.legalizations import LEGALIZATIONS
    from slimtvm.schedules.row_reductions import RowReductions
    from slimtvm.targets.presets import resolve_target, simd_lanes

    target = resolve_target(preset).tvm_target()
    lanes = simd_lanes(target)
    data = (np.random.default_rng(12).standard_normal((1, 1, 4096)) * 3 + 2).astype(np.float32)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType(list(data.shape), "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            variance = relax.op.variance(x, axis=[-1], keepdims=True)
            out = bb.emit_output(relax.op.sqrt(relax.op.add(variance, relax.const(np.float32(1e-5)))))
        bb.emit_func_output(out)
    steps = [relax.transform.LegalizeOps(dict(LEGALIZATIONS)), relax.transform.AnnotateTIROpPattern(), relax.transform.FuseOps(), relax.transform.FuseTIR()]
    mod = tvm.transform.Sequential(steps)(bb.get())
    (name,) = [gvar for gvar, func in mod.functions.items() if isinstance(func, tirx.PrimFunc)]
    scheduled = RowReductions(lanes).schedule(s_tir.Schedule(mod[name]))
    assert scheduled is not None
    assert "T.vectorized" in scheduled.mod["main"].script()
    mod[name] = scheduled.mod["main"].with_attr("tirx.is_scheduled", True)
    vm = relax.VirtualMachine(tvm.compile(mod, target=target), tvm.cpu())
    ours = vm["main"](tvm.runtime.tensor(data)).numpy()
    expected = np.sqrt(data.astype(np.float64).var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(ours, expected, rtol=1e-6)


@pytest.mark.parametrize("preset", x86_kernel_presets())
def test_a_pruned_vit_runs_its_linear_layers_on_the_sparse_kernel(tmp_path, preset):
    """``--prune 0.9`` per layer: the token matmuls run as sparse 1×1 convs over the tokens
    (lowering/sparse_matmuls.py), matching onnxruntime on the saved pruned model; with
    ``sparse="never"`` the same matmuls run the dense GEMM kernel."""
    from slimtvm.compiler.layer_table import decisions_from_manifest, layer_rows
    from slimtvm.compress.prune_float_layers import PruneRequest

    model = vision_transformer(seed=8, image=64, patch=8, dim=64, depth=1, heads=2, classes=10)  # 65 tokens
    inputs = _inputs([1, 3, 64, 64], seed=8)
    saved = str(tmp_path / "pruned.onnx")
    request = PruneRequest(0.9, scope="layer")
    artifact = slimtvm.compile(model, str(tmp_path / "sparse.so"), target=preset, prune=request, save_onnx=saved)
    import onnx

    pruned = onnx.load(saved)
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(pruned, inputs))
    passes = {entry["name"]: entry for entry in artifact.manifest["passes"]}
    assert passes["sparse_layers"]["sparse_convs"] == 4, passes["sparse_layers"]  # qkv, proj, fc1, fc2 (the patch conv: dense)
    plans = [row.plan for row in layer_rows(pruned, decisions_from_manifest(artifact.manifest)) if row.op == "MatMul"]
    assert sum("tokens as pixels of a 1×1 conv" in plan for plan in plans) == 4, plans  # the 4 token matmuls; not q·kᵀ, p·v
    from parallel_chunks import parallel_extents

    kernels = parallel_extents(pruned, "x86-64-avx512" if preset == "host" else preset)
    gelu = [name for name in kernels if "erf" in name]
    assert gelu and not [name for name in gelu if "transpose" in name], sorted(kernels)  # between fc1 and fc2: no transposes
    dense = slimtvm.compile(pruned, str(tmp_path / "dense.so"), target=preset, sparse="never")
    assert_outputs_match(dense.load().run(inputs), onnxruntime_outputs(pruned, inputs))
    plans = [row.plan for row in layer_rows(pruned, decisions_from_manifest(dense.manifest)) if row.op == "MatMul"]
    assert all(plan.startswith("fp32 matmul, GEMM kernel") for plan in plans), plans


@pytest.mark.parametrize("between", ["bias_relu", "per_token_constant", "used_twice"])
def test_element_wise_ops_between_two_sparse_token_matmuls(tmp_path, between):
    """fc1 → element-wise → fc2, both 90% zero: per-feature constants and scalars are rebuilt
    features-major (no transposes between them); a per-token constant, or a value also read
    elsewhere, keeps the transposes; every variant computes what onnxruntime computes."""
    from parallel_chunks import parallel_extents

    g = GraphBuilder(seed=41)
    x = g.input([1, 40, 64], name="input")

    def sparse_weight(rows, cols):
        w = g.rng.standard_normal((rows, cols)) / np.sqrt(rows)
        w[np.abs(w) < np.quantile(np.abs(w), 0.9)] = 0.0
        return g.const(w, "w")

    y = g.node("Add", [g.node("MatMul", [x, sparse_weight(64, 128)]), g.const(g.rng.standard_normal(128), "b")])
    y = g.relu(y)
    outputs = []
    if between == "per_token_constant":
        y = g.node("Add", [y, g.const(g.rng.standard_normal((40, 128)), "pos")])
    elif between == "used_twice":
        outputs.append(g.node("Mul", [y, g.const(np.float32(2.0), "two")]))
    model = g.model([g.node("MatMul", [y, sparse_weight(128, 64)]), *outputs])
    inputs = _inputs([1, 40, 64], seed=41)
    artifact = slimtvm.compile(model, str(tmp_path / "mlp.so"), sparse="always")
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
    assert {entry["name"]: entry for entry in artifact.manifest["passes"]}["sparse_layers"]["sparse_convs"] == 2
    transposes = [name for name in parallel_extents(model, "x86-64") if "transpose" in name]
    # the input's and the output's transposes always; one more pair between the products unless rebuilt
    assert len(transposes) == (2 if between == "bias_relu" else 3), transposes


def test_row_kernels_take_a_layer_norm_exported_as_its_steps():
    """``ReduceMean(keepdims=1)`` → ``Sub`` → ``Pow`` → ``ReduceMean`` → ``Add`` → ``Sqrt`` →
    ``Div`` → ``Mul`` → ``Add`` (torch's LayerNorm before opset 17): after fusion, every kernel
    with a mean is a row kernel (unit axes aside), and the module computes numpy's layer norm."""
    import tvm
    from tvm import relax, s_tir, tirx

    from slimtvm.lowering.legalizations import LEGALIZATIONS
    from slimtvm.schedules.row_reductions import RowReductions

    rng = np.random.default_rng(5)
    data = (rng.standard_normal((1, 21, 96)) * 3 + 1).astype(np.float32)
    gamma, beta = rng.standard_normal(96).astype(np.float32), rng.standard_normal(96).astype(np.float32)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([1, 21, 96], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            centred = bb.emit(relax.op.subtract(x, relax.op.mean(x, axis=[-1], keepdims=True)))
            variance = bb.emit(relax.op.mean(relax.op.power(centred, relax.const(np.float32(2.0))), axis=[-1], keepdims=True))
            normed = bb.emit(relax.op.divide(centred, relax.op.sqrt(relax.op.add(variance, relax.const(np.float32(1e-5))))))
            out = bb.emit_output(relax.op.add(relax.op.multiply(normed, relax.const(gamma)), relax.const(beta)))
        bb.emit_func_output(out)
    steps = [relax.transform.LegalizeOps(dict(LEGALIZATIONS)), relax.transform.AnnotateTIROpPattern(), relax.transform.FuseOps(), relax.transform.FuseTIR()]
    mod = tvm.transform.Sequential(steps)(bb.get())
    rows = [gvar for gvar, func in mod.functions.items() if isinstance(func, tirx.PrimFunc) and "mean" in gvar.name_hint]
    assert rows, [gvar.name_hint for gvar in mod.get_global_vars()]
    for gvar in rows:
        scheduled = RowReductions(16).schedule(s_tir.Schedule(mod[gvar]))
        assert scheduled is not None, gvar.name_hint
        mod[gvar] = scheduled.mod["main"].with_attr("tirx.is_scheduled", True)
    vm = relax.VirtualMachine(tvm.compile(mod, target="llvm"), tvm.cpu())
    ours = vm["main"](tvm.runtime.tensor(data)).numpy()
    mean = data.mean(-1, keepdims=True)
    expected = (data - mean) / np.sqrt(((data - mean) ** 2).mean(-1, keepdims=True) + 1e-5) * gamma + beta
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("preset", x86_kernel_presets())
def test_a_bert_encoder_with_token_ids_and_a_mask_matches_onnxruntime(tmp_path, preset):
    """Hugging Face's export of a BERT encoder in small: int64 token ids into a ``Gather`` of the
    word embeddings, an int64 attention mask turned into ``(1 − mask) · −10000`` and added to the
    scores; 37 tokens, so the attention runs on keys padded with the mask (padded with zeros)."""
    model = bert_mini(seed=9, tokens=37, dim=64, depth=1, heads=2, vocab=100)
    rng = np.random.default_rng(9)
    mask = np.ones((1, 37), np.int64)
    mask[0, 30:] = 0
    inputs = {"input_ids": rng.integers(0, 100, (1, 37)).astype(np.int64), "attention_mask": mask}
    artifact = slimtvm.compile(model, str(tmp_path / "bert.so"), target=preset)
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
    passes = {entry["name"]: entry for entry in artifact.manifest["passes"]}
    assert (passes["matmul_columns"]["attentions"], passes["matmul_columns"]["products"]) == (1, 0)
    assert passes["kernels"]["generic_fallbacks"] == [], passes["kernels"]
    assert passes["split_batch"]["why_not"] == "batch 1"  # two inputs of one sequence: no line in compile's output


def test_a_token_id_outside_the_vocabulary_gives_nan_not_another_row(tmp_path):
    """onnxruntime refuses such a run; slimtvm's Gather (lowering/gathers.py) gives NaN for the
    token, which reaches the outputs, instead of reading outside the embedding table."""
    model = bert_mini(seed=9, tokens=16, dim=32, depth=1, heads=2, vocab=50)
    ids = np.arange(16, dtype=np.int64).reshape(1, 16)
    ids[0, 3] = 50  # one past the table
    run = slimtvm.compile(model, str(tmp_path / "bert.so")).load().run({"input_ids": ids, "attention_mask": np.ones((1, 16), np.int64)})
    out = next(iter(run.values()))
    assert np.isnan(out[0, 3]).all()
