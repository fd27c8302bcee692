"""Matmuls by a constant weight matrix: a batch of one-row blocks as one product
(passes/matmul_rows.py), against onnxruntime. (Weight rows 4 KB apart: tests/test_packed_matmuls.py.)"""

from __future__ import annotations

import pytest
from conftest import assert_outputs_match, onnxruntime_outputs, x86_kernel_presets
from onnx_builders import digits_like_input
from test_packed_matmuls import _matmul_model  # MatMul by a constant weight, bias, activation

import slimtvm


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
