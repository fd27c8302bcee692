"""Per-channel constants of a lower rank (``Mul`` / ``Add`` by ``Unsqueeze(c[C])`` = ``c[C,1,1]``,
DenseNet-121's pattern after every batch norm) follow the blocked layout: no relayouts around
them, the ops fused into the convs' epilogues, outputs as onnxruntime's."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from conftest import assert_outputs_match, onnxruntime_outputs, x86_kernel_presets
from onnx_builders import GraphBuilder, digits_like_input

import slimtvm

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _channel_constant(g: GraphBuilder, values) -> str:
    """``Unsqueeze(values[C], axes=[1, 2])``: a ``[C, 1, 1]`` tensor, as DenseNet-121's export has it."""
    return g.node("Unsqueeze", [g.const(values), g.const([1, 2], dtype=np.int64)])


def _scale_shift_relu(g: GraphBuilder, x: str, channels: int) -> str:
    scaled = g.node("Mul", [x, _channel_constant(g, g.rng.uniform(0.5, 1.5, channels))])
    shifted = g.node("Add", [_channel_constant(g, g.rng.normal(0, 0.2, channels)), scaled])  # the constant first
    return g.relu(shifted)


def _dense_unit_model(channels: int = 32, growth: int = 16, size: int = 10):
    """A stem conv, two DenseNet layers (BN → scale → shift → ReLU → 1×1 conv → BN → scale →
    shift → ReLU → 3×3 conv, concatenated with its input), then a subtract and a divide by
    ``[C, 1, 1]`` constants and a 1×1 conv."""
    g = GraphBuilder(seed=5)
    x = g.input([1, 16, size, size])
    features, width = g.conv(x, 16, channels, kernel=3, pads=(1, 1, 1, 1)), channels
    for _ in range(2):
        y = _scale_shift_relu(g, g.batchnorm(features, width), width)
        y = g.conv(y, width, 4 * growth, kernel=1, bias=False)
        y = _scale_shift_relu(g, g.batchnorm(y, 4 * growth), 4 * growth)
        y = g.conv(y, 4 * growth, growth, kernel=3, pads=(1, 1, 1, 1), bias=False)
        features, width = g.node("Concat", [features, y], axis=1), width + growth
    out = g.node("Sub", [_channel_constant(g, g.rng.normal(0, 1, width)), features])
    out = g.node("Div", [out, _channel_constant(g, g.rng.uniform(1, 2, width))])
    return g.model(g.conv(out, width, 16, kernel=1)), [1, 16, size, size]


@pytest.mark.parametrize("preset", x86_kernel_presets())
def test_per_channel_constants_of_rank_3_keep_the_blocked_layout(tmp_path, preset):
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from parallel_chunks import parallel_extents

    model, shape = _dense_unit_model()
    inputs = {"x": digits_like_input(shape, seed=4)}
    artifact = slimtvm.compile(model, str(tmp_path / "dense.so"), target=preset)
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
    kernels = parallel_extents(model, "x86-64-avx512" if preset == "host" else preset)
    relayouts = sorted(name for name in kernels if "channel_relayout" in name)
    assert len(relayouts) <= 2, relayouts  # the model's input and output only (before: 6 kinds)
    # the scale, shift and ReLU after each 1×1 conv run in its epilogue
    assert sum("conv2d" in name and "multiply" in name for name in kernels) == 2, sorted(kernels)


def test_the_pass_leaves_scalars_and_unknown_ranks_alone():
    from tvm import relax

    from slimtvm.passes.constants import constant_value
    from slimtvm.passes.rank_matched_constants import RankMatchedConstants

    builder = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([1, 4, 2, 2], "float32"))
    unknown = relax.Var("u", relax.TensorType(dtype="float32", ndim=-1))
    with builder.function("main", [x, unknown]):
        scaled = builder.emit(relax.op.multiply(x, relax.const(np.float32(2.0))))
        shifted = builder.emit(relax.op.add(unknown, relax.const(np.ones((4, 1, 1), np.float32))))
        raised = builder.emit(relax.op.subtract(relax.const(np.ones((4, 1, 1), np.float32)), x))
        builder.emit_func_output(relax.Tuple([scaled, shifted, raised]))
    rank_matched = RankMatchedConstants()
    mod = rank_matched(builder.get())
    assert rank_matched.rewritten == 1
    shapes = {}
    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            call = binding.value
            shapes[call.op.name] = [constant_value(arg).shape for arg in call.args if constant_value(arg) is not None]
    assert shapes == {"relax.multiply": [()], "relax.add": [(4, 1, 1)], "relax.subtract": [(1, 4, 1, 1)]}
