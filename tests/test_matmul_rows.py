"""Matmuls by a constant weight matrix: a batch of one-row blocks as one product
(passes/matmul_rows.py), and weight rows 4 KB apart given a few zero columns
(lowering/pad_channels.py), against onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from conftest import assert_outputs_match, onnxruntime_outputs, x86_kernel_presets
from onnx_builders import GraphBuilder, digits_like_input

import slimtvm
from slimtvm.compiler.pipeline import pipeline_for
from slimtvm.frontend.onnx_import import import_onnx
from slimtvm.targets.presets import resolve_target


def _matmul_model(shape, columns, seed):
    g = GraphBuilder(seed=seed)
    x = g.input(list(shape))
    weight = g.const(g.rng.normal(0, 1 / np.sqrt(shape[-1]), size=(shape[-1], columns)))
    product = g.node("Add", [g.node("MatMul", [x, weight]), g.const(g.rng.normal(0, 0.1, size=columns), "b")])
    return g.model(g.relu(product))


@pytest.mark.parametrize("preset", x86_kernel_presets())
def test_sequence_first_rows_run_as_one_product_and_match_onnxruntime(tmp_path, preset):
    """``[L, 1, E] @ w``: nn.MultiheadAttention's projection without its fast path."""
    model = _matmul_model((12, 1, 32), 96, seed=1)
    inputs = {"x": digits_like_input((12, 1, 32), seed=1)}
    artifact = slimtvm.compile(model, str(tmp_path / "rows.so"), target=preset)
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
    assert next(e for e in artifact.manifest["passes"] if e["name"] == "matmul_rows")["rewritten"] == 1


@pytest.mark.parametrize("shape,rewritten", [((1, 12, 32), 0), ((3, 6, 32), 0), ((2, 1, 4, 32), 1)])
def test_row_blocks_that_fill_a_tile_or_have_no_batch_stay(tmp_path, shape, rewritten):
    model = _matmul_model(shape, 48, seed=2)
    inputs = {"x": digits_like_input(shape, seed=2)}
    artifact = slimtvm.compile(model, str(tmp_path / "rows.so"), target="x86-64")
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
    assert next(e for e in artifact.manifest["passes"] if e["name"] == "matmul_rows")["rewritten"] == rewritten


@pytest.mark.parametrize("preset", x86_kernel_presets())
@pytest.mark.parametrize("rows,columns,padded", [(8, 1024, True), (2, 1024, False), (8, 1000, False)])
def test_weight_rows_4kb_apart_get_zero_columns_and_match_onnxruntime(tmp_path, preset, rows, columns, padded):
    model = _matmul_model((1, rows, 24), columns, seed=3)
    inputs = {"x": digits_like_input((1, rows, 24), seed=3)}
    artifact = slimtvm.compile(model, str(tmp_path / "wide.so"), target=preset)
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
    scripts = "\n".join(func.script() for func in _lowered(model, preset).functions.values() if isinstance(func, tvm.tirx.PrimFunc))
    assert ("T.int64(24), T.int64(1088)" in scripts) == padded


def _lowered(model, preset: str):
    target = resolve_target(preset).tvm_target()
    pipeline = pipeline_for(target)
    with target:
        return tvm.transform.Sequential(pipeline.to_kernels())(import_onnx(model, None).mod)
