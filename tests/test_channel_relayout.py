"""The NCHW ↔ NCHW[b]c relayout kernel (schedules/channel_relayout.py): exact against numpy, for
whole and partial pixel tiles, and what the lowering hands it."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from conftest import assert_outputs_match, onnxruntime_outputs, x86_kernel_presets
from onnx_builders import GraphBuilder, digits_like_input

import slimtvm
from slimtvm.compiler.pipeline import pipeline_for
from slimtvm.frontend.onnx_import import import_onnx
from slimtvm.schedules.channel_relayout import channel_relayout_primfunc
from slimtvm.targets.presets import resolve_target


def _blocked(x: np.ndarray, block: int) -> np.ndarray:
    n, c, h, w = x.shape
    return np.ascontiguousarray(x.reshape(n, c // block, block, h, w).transpose(0, 1, 3, 4, 2))


@pytest.mark.parametrize("preset", x86_kernel_presets() or ["host"])
@pytest.mark.parametrize(
    "batch,channels,height,width,block",
    [(1, 32, 5, 7, 16), (2, 16, 4, 4, 8), (1, 64, 14, 14, 16), (3, 8, 3, 3, 8), (1, 48, 4, 4, 16), (2, 8, 2, 3, 4), (1, 16, 12, 12, 2)],
)
@pytest.mark.parametrize("to_blocked", [True, False])
def test_relayout_moves_every_value_exactly(preset, batch, channels, height, width, block, to_blocked):
    """Whole tiles of ``block`` pixels (transposed in registers) and the pixels after the last
    whole tile (35 = 2 · 16 + 3, 196 = 12 · 16 + 4), one tile exactly, batches, blocks of 2 to 16."""
    x = np.random.default_rng(channels + height).standard_normal((batch, channels, height, width)).astype(np.float32)
    source, expected = (x, _blocked(x, block)) if to_blocked else (_blocked(x, block), x)
    func = channel_relayout_primfunc(batch, channels, height, width, block, to_blocked)
    library = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), resolve_target(preset).tvm_target())
    out = tvm.runtime.tensor(np.full(expected.shape, np.nan, np.float32))
    library(tvm.runtime.tensor(source), out)
    np.testing.assert_array_equal(out.numpy(), expected)


def test_relayout_refuses_what_it_cannot_transpose():
    with pytest.raises(ValueError, match="power of two"):
        channel_relayout_primfunc(1, 24, 4, 4, 12, True)
    with pytest.raises(ValueError, match="do not fill blocks of 16"):
        channel_relayout_primfunc(1, 24, 4, 4, 16, True)
    with pytest.raises(ValueError, match="fewer than one tile of 16"):
        channel_relayout_primfunc(1, 512, 1, 1, 16, False)


@pytest.mark.parametrize("preset", x86_kernel_presets() or ["host"])
def test_models_relayout_through_the_kernel_and_match_onnxruntime(tmp_path, preset):
    """A model with an NCHW input, blocked convs and a plain-layout op in between (a 7 × 9 image:
    63 pixels, a partial tile) runs its relayouts on this kernel and matches onnxruntime."""
    g = GraphBuilder(seed=5)
    x = g.input([2, 16, 7, 9])
    y = g.relu(g.conv(x, 16, 32, kernel=3, pads=(1, 1, 1, 1)))
    y = g.node("Transpose", [y], perm=[0, 1, 3, 2])  # no blocked form: back to NCHW and out again
    y = g.relu(g.conv(y, 32, 16, kernel=1))
    model = g.model(y)
    target = resolve_target(preset).tvm_target()
    pipeline = pipeline_for(target)
    with target:
        kernels = tvm.transform.Sequential(pipeline.to_kernels())(import_onnx(model).mod)
    names = [gvar.name_hint for gvar in kernels.functions]
    assert sum("channel_relayout" in name for name in names) >= 3 and not any("layout_transform" in name for name in names)
    artifact = slimtvm.compile(model, str(tmp_path / "model.so"), target=preset)
    inputs = {"x": digits_like_input((2, 16, 7, 9), seed=6)}
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
