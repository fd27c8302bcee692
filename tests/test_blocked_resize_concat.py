"""A detector's upsampling path (conv → nearest Resize → Concat with a backbone feature → convs)
runs in the blocked layout: no relayout kernel around it, and the same outputs as onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from conftest import assert_outputs_match, onnxruntime_outputs, x86_kernel_presets
from detector_graphs import yolo_like_detector
from tvm import relax

import slimtvm
from slimtvm.compiler.pipeline import pipeline_for
from slimtvm.frontend.onnx_import import import_onnx
from slimtvm.targets.presets import resolve_target


def _kernel_inputs(model, preset: str) -> dict:
    """Kernel name → ranks of its tensor arguments and (last) of its result, from the lowered
    module's main function."""
    target = resolve_target(preset).tvm_target()
    pipeline = pipeline_for(target)
    with target:
        mod = tvm.transform.Sequential(pipeline.to_kernels())(import_onnx(model, None).mod)
    ranks = {}

    def visit(expr):
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.call_tir":
            ranks[expr.args[0].name_hint] = [len(arg.ty.shape) for arg in expr.args[1].fields] + [len(expr.ty.shape)]

    relax.analysis.post_order_visit(mod["main"], visit)
    return ranks


@pytest.mark.parametrize("preset", ["x86-64", "x86-64-avx512"])
def test_resize_and_concat_read_and_write_channel_blocks(preset):
    """The Resize and the Concat after it (fused into one kernel) take the blocked conv outputs
    (5-D) as they are and write a blocked result, which the C2f block's convs read directly
    (before: both inputs relayouted to plain NCHW, and the result back to blocked)."""
    ranks = _kernel_inputs(yolo_like_detector(seed=3), preset)
    resizes = [name for name in ranks if "resize2d" in name]
    assert resizes and all(ranks[name] == [5, 5, 5] for name in resizes), {name: ranks[name] for name in resizes}


def test_blocked_upsampling_matches_onnxruntime_on_every_x86_variant(tmp_path):
    model = yolo_like_detector(seed=4)
    images = {"images": np.random.default_rng(5).random((1, 3, 64, 64)).astype(np.float32)}
    expected = onnxruntime_outputs(model, images)
    for preset in x86_kernel_presets():
        artifact = slimtvm.compile(model, str(tmp_path / f"{preset}.so"), target=preset)
        assert_outputs_match(artifact.load().run(images), expected)
