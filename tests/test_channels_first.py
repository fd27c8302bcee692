"""ConvNeXt's channels-last stretches (``Transpose`` → ``LayerNormalization`` → ``MatMul`` + ``Add``
→ GELU → ``MatMul`` + ``Add`` → ``Transpose``) run in NCHW (passes/channels_first.py): the matmuls
as slimtvm's 1×1 conv kernels with the GELU in their epilogue, the layer norms in the blocked
layout (lowering/channel_norms.py), no transposes; outputs as onnxruntime's. Before, the 4-D
matmuls ran on the generic schedule (ConvNeXt-Tiny 111× onnxruntime's time)."""

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

from architectures import _gelu, _layer_norm_channels, _layer_norm_last, _linear_last  # noqa: E402


def _convnext_like(size: int = 32):
    """ConvNeXt in small: 4×4/4 stem + LayerNorm2d, one block of 32 channels (7×7 depthwise,
    channels-last LayerNorm, Linear 32 → 128, GELU, Linear 128 → 32, layer scale, residual), a
    LayerNorm2d + 2×2/2 downsample to 64 channels, global pool, LayerNorm2d, classifier."""
    g = GraphBuilder(seed=33)
    x = g.input([1, 3, size, size])
    x = _layer_norm_channels(g, g.conv(x, 3, 32, kernel=4, stride=4), 32)
    y = g.conv(x, 32, 32, kernel=7, pads=(3, 3, 3, 3), groups=32)
    y = _layer_norm_last(g, g.node("Transpose", [y], perm=[0, 2, 3, 1]), 32)
    y = _linear_last(g, _gelu(g, _linear_last(g, y, 32, 128)), 128, 32)
    y = g.node("Transpose", [y], perm=[0, 3, 1, 2])
    x = g.node("Add", [x, g.node("Mul", [y, g.const((0.5 + 0.1 * g.rng.standard_normal(32)).reshape(32, 1, 1), "gamma")])])
    x = g.conv(_layer_norm_channels(g, x, 32), 32, 64, kernel=2, stride=2)
    x = g.node("Flatten", [_layer_norm_channels(g, g.node("GlobalAveragePool", [x]), 64)])
    return g.model(g.gemm(x, 64, 10)), [1, 3, size, size]


def _inputs(shape):
    return {"x": np.random.default_rng(3).standard_normal(shape).astype(np.float32) * 2 + 0.5}


@pytest.mark.parametrize("preset", x86_kernel_presets())
def test_convnext_blocks_run_on_conv_kernels_in_the_blocked_layout(tmp_path, preset):
    from parallel_chunks import parallel_extents

    model, shape = _convnext_like()
    inputs = _inputs(shape)
    artifact = slimtvm.compile(model, str(tmp_path / "convnext.so"), target=preset)
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
    passes = {entry["name"]: entry for entry in artifact.manifest["passes"]}
    assert passes["channels_first"] == {"name": "channels_first", "stretches": 4, "matmuls_as_convs": 2, "matmul_positions": [0, 1]}
    assert passes["kernels"]["generic_fallbacks"] == [] and passes["kernels"]["by_family"]["conv2d"] >= 3
    from slimtvm.compiler.layer_table import decisions_from_manifest, layer_rows

    rows = layer_rows(model, decisions_from_manifest(artifact.manifest))  # what `slimtvm inspect` prints
    plans = {row.op: row.plan for row in rows if row.op in ("MatMul", "Gemm", "Conv")}
    assert plans["MatMul"].startswith("fp32 conv") and plans["Gemm"].startswith("fp32 dense") and not any("?" in row.plan for row in rows), plans
    kernels = parallel_extents(model, "x86-64-avx512" if preset == "host" else preset)
    assert not [name for name in kernels if "transpose" in name], sorted(kernels)
    assert any("conv2d" in name and "erf" in name for name in kernels), sorted(kernels)  # the GELU in the conv's epilogue
    relayouts = [name for name in kernels if "relayout" in name or "layout_transform" in name]
    assert len(relayouts) <= 3, sorted(kernels)  # the input, and the pooled 1 × 1 tensor's; before: around every norm


def test_a_stretch_whose_channels_last_value_is_used_outside_is_left_as_it_is(tmp_path):
    """A channels-last value read by an op the pass does not rewrite (a mean over the image rows)
    keeps the stretch in channels-last form: correct, and reported as not rewritten."""
    g = GraphBuilder(seed=34)
    x = g.input([1, 16, 8, 8])
    y = g.node("Transpose", [g.conv(x, 16, 16, kernel=3, pads=(1, 1, 1, 1))], perm=[0, 2, 3, 1])
    y = _linear_last(g, y, 16, 32)
    side = g.node("ReduceMean", [y], axes=[1], keepdims=0)
    out = g.node("Transpose", [y], perm=[0, 3, 1, 2])
    model = g.model([out, side])
    inputs = _inputs([1, 16, 8, 8])
    artifact = slimtvm.compile(model, str(tmp_path / "side.so"))
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
    passes = {entry["name"]: entry for entry in artifact.manifest["passes"]}
    assert passes["channels_first"]["stretches"] == 0


def test_the_pass_alone_is_a_valid_relax_rewrite_for_plain_tvm():
    """On TVM's own import and build (no other slimtvm step): the stretch loses its transposes
    and matmuls, and the module computes what onnxruntime computes."""
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    from slimtvm.passes.channels_first import ChannelsFirst

    model, shape = _convnext_like()
    rewrite = ChannelsFirst()
    mod = rewrite(from_onnx(model, keep_params_in_input=False))
    assert (rewrite.stretches, rewrite.matmuls) == (4, 2)
    text = mod.script()
    assert "axes=[0, 2, 3, 1]" not in text and "axes=[0, 3, 1, 2]" not in text and text.count("R.matmul(") == 1  # the classifier's
    inputs = _inputs(shape)
    vm = relax.VirtualMachine(tvm.compile(mod, "llvm"), tvm.cpu())
    ours = vm["main"](tvm.runtime.tensor(inputs["x"])).numpy()
    assert_outputs_match({"out": ours}, {"out": next(iter(onnxruntime_outputs(model, inputs).values()))})
