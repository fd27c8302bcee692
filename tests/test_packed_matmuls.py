"""Matmuls by a constant weight in the GEMM form read it in column panels packed at compile time
(lowering/packed_matmuls.py): the layout against numpy, the compiled models against onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_outputs_match, onnxruntime_outputs, x86_kernel_presets
from onnx_builders import GraphBuilder, digits_like_input

import slimtvm
from slimtvm.lowering.packed_matmuls import packed_weight, panel_columns


def _matmul_model(shape, columns, seed, activation="Relu"):
    g = GraphBuilder(seed=seed)
    x = g.input(list(shape))
    weight = g.const(g.rng.normal(0, 1 / np.sqrt(shape[-1]), size=(shape[-1], columns)))
    product = g.node("Add", [g.node("MatMul", [x, weight]), g.const(g.rng.normal(0, 0.1, size=columns), "b")])
    return g.model(g.node(activation, [product]))


def test_panels_hold_every_weight_once_where_numpy_indexes_it():
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((24, 192)).astype(np.float32)
    packed = packed_weight(weight, 64)
    assert packed.shape == (3, 24, 64)
    k, j = np.meshgrid(np.arange(24), np.arange(192), indexing="ij")
    np.testing.assert_array_equal(packed[j // 64, k, j % 64], weight)
    with pytest.raises(ValueError, match="multiple of 64"):
        packed_weight(weight[:, :100], 64)


@pytest.mark.parametrize(
    "columns,lanes,panel",
    [(3072, 16, 16), (1008, 16, 16), (32, 16, 16), (3072, 8, 8), (24, 8, 8), (1376, 4, 4), (1000, 16, 0), (100, 8, 0)],
)
def test_a_panel_is_one_simd_vector_of_columns(columns, lanes, panel):
    assert panel_columns(columns, lanes) == panel


@pytest.mark.parametrize("preset", x86_kernel_presets())
@pytest.mark.parametrize(
    "shape,columns,activation",
    [
        ((1, 50, 96), 1024, "Relu"),  # tokens × features, weight rows 4 KB apart
        ((12, 64), 144, "Sigmoid"),  # rows of a 2-D product: 9 AVX-512 vectors, 3-vector tiles
        ((1, 7, 7, 32), 128, "Relu"),  # a channels-last MLP (ConvNeXt's)
    ],
)
def test_packed_products_match_onnxruntime(tmp_path, preset, shape, columns, activation):
    model = _matmul_model(shape, columns, seed=4, activation=activation)
    inputs = {"x": digits_like_input(shape, seed=4)}
    artifact = slimtvm.compile(model, str(tmp_path / "packed.so"), target=preset)
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
    assert next(e for e in artifact.manifest["passes"] if e["name"] == "packed_matmuls")["packed"] == 1
    assert "column panels" in artifact.manifest["layers"][0]["plan"]
    kernels = next(e for e in artifact.manifest["passes"] if e["name"] == "kernels")
    assert kernels["generic"] == 0 and kernels["by_family"] == {"dense": 1}  # the bias and activation fused into it


@pytest.mark.parametrize("preset", x86_kernel_presets())
@pytest.mark.parametrize("shape,columns", [((1, 512), 1000), ((2, 64), 128), ((4, 160), 1024)])
def test_few_row_products_run_the_panel_form(tmp_path, preset, shape, columns):
    """Up to four rows (a classifier at batch 1, its 1000 columns padded to whole vectors and
    sliced back; two and four rows) are packed too and run the dense family's panel form."""
    model = _matmul_model(shape, columns, seed=5)
    inputs = {"x": digits_like_input(shape, seed=5)}
    artifact = slimtvm.compile(model, str(tmp_path / "panels.so"), target=preset)
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
    assert next(e for e in artifact.manifest["passes"] if e["name"] == "packed_matmuls")["packed"] == 1
    assert artifact.manifest["layers"][0]["plan"].startswith("fp32 dense, matrix-vector kernel")
    assert next(e for e in artifact.manifest["passes"] if e["name"] == "kernels")["generic"] == 0


@pytest.mark.parametrize(
    "rows,reduction,columns,lanes,expected",
    [
        (1, 1280, 1008, 16, (3, 4)),  # MobileNetV2's classifier on AVX-512: 63 panels, 21 tiles × 4 segments
        (1, 512, 1008, 16, (3, 4)),  # ResNet-18's
        (1, 1280, 1000, 8, (5, 4)),  # AVX2: 125 panels, 25 tiles × 4 segments
        (4, 512, 1000, 8, (1, 1)),  # four rows on AVX2: 4 × 5 accumulators would not fit 12; 125 one-panel tiles
        (2, 64, 128, 16, (4, 2)),  # two tiles; segments of at least 32 reductions: 2
    ],
)
def test_panel_tiles_fit_the_registers_and_make_the_chunks(rows, reduction, columns, lanes, expected):
    from slimtvm.schedules.dense import PANEL_MIN_SEGMENT, default_panel_tile, panel_accumulators

    vectors, segments = default_panel_tile(rows, columns, reduction, lanes)
    assert (vectors, segments) == expected
    assert rows * vectors <= panel_accumulators(lanes) and (columns // lanes) % vectors == 0
    assert reduction % segments == 0 and reduction // segments >= PANEL_MIN_SEGMENT


@pytest.mark.parametrize("preset,lanes", [("x86-64", 8), ("x86-64-avx512", 16)])
def test_a_classifier_streams_panels_with_its_accumulators_in_registers(preset, lanes):
    """The panel form's loops, read from the scheduled kernel of a 512 → 1000 classifier: a parallel
    loop of tiles × segments (≥ 64 chunks, issue 16), and under it the reduction with the tile's
    rows and panels unrolled inside it and one vector innermost — the loop order that lets LLVM
    keep the accumulators in registers (split-K, before, loaded and stored its partial sums every
    few reduction steps) — then a parallel final pass over the output vectors."""
    import tvm_ffi
    from conftest import scheduled_kernels
    from tvm.tirx.stmt import For, ForKind

    from slimtvm.schedules.dense import default_panel_tile

    vectors, segments = default_panel_tile(1, 1008 if lanes == 16 else 1000, 512, lanes)
    mod = scheduled_kernels(_matmul_model((1, 512), 1000, seed=6), preset)
    (func,) = [f for gv, f in mod.functions.items() if "packed_matmul" in gv.name_hint]
    parallel, nests = [], []

    def visit(node):
        if isinstance(node, For):
            if node.kind == ForKind.PARALLEL:
                parallel.append(int(node.extent))
            if node.kind == ForKind.SERIAL and isinstance(node.body, For) and node.body.kind == ForKind.UNROLLED:
                nests.append(node)

    tvm_ffi.structural_walk(func.body, visit)
    panels = (1008 if lanes == 16 else 1000) // lanes
    assert parallel[0] == panels // vectors * segments >= 64, parallel
    assert len(parallel) == 2 and parallel[1] >= 64, parallel  # the final pass over output vectors
    (reduction,) = [n for n in nests if int(n.extent) == 512 // segments]
    rows = reduction.body
    assert int(rows.extent) == 1 and rows.body.kind == ForKind.UNROLLED and int(rows.body.extent) == vectors
    assert rows.body.body.kind == ForKind.VECTORIZED and int(rows.body.body.extent) == lanes


def _prefetched_buffer_shapes(model, preset: str) -> set:
    """The shapes of the buffers that the kernels of ``model``, scheduled for ``preset`` and
    through the weight prefetch pass (lowering/weight_prefetch.py), prefetch from."""
    import tvm
    import tvm_ffi
    from conftest import scheduled_kernels
    from tvm import tirx

    from slimtvm.lowering.weight_prefetch import insert_weight_prefetch

    mod = insert_weight_prefetch()(scheduled_kernels(model, preset))
    shapes = set()

    def visit(node):
        if isinstance(node, tvm.ir.Call) and getattr(node.op, "name", "") == "tirx.prefetch":
            shapes.add(tuple(int(d) for d in node.args[0].args[0].source.shape))

    for func in mod.functions.values():
        if isinstance(func, tirx.PrimFunc):
            tvm_ffi.structural_walk(func.body, visit)
    return shapes


@pytest.mark.parametrize("preset", ["x86-64", "x86-64-avx512"])
@pytest.mark.parametrize(
    "rows,reduction,columns,prefetched",
    [
        (40, 512, 1376, ("x86-64", "x86-64-avx512")),  # Llama's MLP, 2.8 MB: 10-row tiles on AVX-512 (12 × 2 would end in a partial one), 5-row on AVX2
        (37, 512, 1376, ()),  # no row tile from half the register tile's rows up divides 37: a partial tile, no prefetch
        (40, 512, 128, ()),  # 256 KB of weights: they stay in L2
        (40, 1376, 512, ("x86-64", "x86-64-avx512")),  # Llama's down projection: the GEMM form with the prefetch, not row panels
        (49, 768, 768, ("x86-64-avx512",)),  # wav2vec2's 49 frames: 7 × 3 on AVX-512 (6 × 4 has no whole-row form); AVX2's 7 × 1 would hold 7 accumulators
    ],
)
def test_token_products_prefetch_the_next_column_group(tmp_path, preset, rows, reduction, columns, prefetched):
    """A product of fewer rows than columns by a packed weight of 512 KB or more prefetches the
    next column group's panels from that weight (never from the accumulator or ``x``, which are
    3-D as well: session 41's attempt prefetched the accumulator and ran 1.8× slower) where its row
    tiles cover the rows exactly; the model matches onnxruntime where this host runs the preset."""
    from conftest import x86_kernel_presets

    model = _matmul_model((1, rows, reduction), columns, seed=7)
    lanes = 16 if preset == "x86-64-avx512" else 8
    expected = {(columns // lanes, reduction, lanes)} if preset in prefetched else set()
    assert _prefetched_buffer_shapes(model, preset) == expected
    runnable = "host" if preset == "x86-64-avx512" else preset
    if runnable not in x86_kernel_presets():
        return  # scheduled and inspected; this host does not run AVX-512
    artifact = slimtvm.compile(model, str(tmp_path / "model.so"), target=preset)
    inputs = {"x": digits_like_input((1, rows, reduction), seed=7)}
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
