"""A blocked conv whose last input channels have only zero weights reduces over the others only
(schedules/conv2d_nchwc.py, ``blocked_conv2d_nchwc``): on 16-lane targets a 24- or 40-channel
tensor runs padded to 32 or 48 channels (lowering/pad_channels.py), and the 1×1 convs that read
it multiplied the padding by zero weights. The scheduled kernels for the AVX-512 preset reduce
over 24 and 40 channels; the 8-lane build has no padding and reduces over all of them. Every
model matches onnxruntime on every x86 kernel variant the host runs."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_outputs_match, onnxruntime_outputs, scheduled_kernels, x86_kernel_presets
from onnx_builders import GraphBuilder, digits_like_input

import slimtvm
from slimtvm.schedules.conv2d_nchwc import used_input_channels


def _model(narrow: int):
    """16 channels → ``narrow`` (1×1, ReLU) → a 3×3/2 conv to 48 channels (the direct kernel:
    Winograd takes stride 1), plus a 1×1 conv to 32."""
    g = GraphBuilder(seed=narrow)
    x = g.input([1, 16, 20, 20])
    y = g.relu(g.conv(x, 16, narrow, kernel=1))
    return g.model([g.conv(y, narrow, 48, kernel=3, stride=2, pads=(1, 1, 1, 1)), g.conv(y, narrow, 32, kernel=1)])


def _reductions(mod) -> list:
    """The extent of the input-channel reduction (``ic``) of every direct conv kernel, sorted."""
    import tvm_ffi
    from tvm import tirx
    from tvm.s_tir import SBlock

    extents = []
    for gvar, func in mod.functions.items():
        if not isinstance(func, tirx.PrimFunc):
            continue

        def visit(node):
            if isinstance(node, SBlock) and node.name_hint.startswith("conv2d_NCHWc"):
                reductions = [int(v.dom.extent) for v in node.iter_vars if v.iter_type == tirx.IterVar.CommReduce]
                extents.extend(reductions[:1])  # ic, then the kernel rows and columns

        tvm_ffi.structural_walk(func.body, visit)
    return sorted(set(extents))


@pytest.mark.parametrize("narrow", [24, 40])
def test_convs_reading_padded_channels_reduce_over_the_real_ones(tmp_path, narrow):
    model = _model(narrow)
    assert _reductions(scheduled_kernels(model, "x86-64-avx512")) == [16, narrow]  # 32 or 48 before
    assert _reductions(scheduled_kernels(model, "x86-64")) == [16, narrow]  # no padding at 8 channels per block
    inputs = {"x": digits_like_input((1, 16, 20, 20), seed=narrow)}
    expected = onnxruntime_outputs(model, inputs)
    for preset in x86_kernel_presets():
        artifact = slimtvm.compile(model, str(tmp_path / f"{preset}.so"), target=preset)
        assert_outputs_match(artifact.load().run(inputs), expected)


def test_used_input_channels_ends_at_the_last_nonzero_weight():
    weight = np.zeros((2, 3, 1, 1, 16, 16), np.float32)  # 48 input channels
    weight[1, 2, 0, 0, 3, 7] = 0.5  # channel 2 · 16 + 3
    weight[0, 0, 0, 0, 1, 0] = -1.0
    assert used_input_channels(weight) == 36
    assert used_input_channels(np.zeros_like(weight)) == 1
