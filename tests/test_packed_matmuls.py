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


@pytest.mark.parametrize("shape,columns", [((2, 64), 128), ((4, 32), 1024)])
def test_split_k_products_keep_the_plain_weight(tmp_path, shape, columns):
    """Up to four rows run split-K, which streams whole rows of w."""
    model = _matmul_model(shape, columns, seed=5)
    inputs = {"x": digits_like_input(shape, seed=5)}
    artifact = slimtvm.compile(model, str(tmp_path / "plain.so"), target="x86-64")
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
    assert next(e for e in artifact.manifest["passes"] if e["name"] == "packed_matmuls")["packed"] == 0
