"""1×1 convs on small images whose input outweighs what their halves' partial sums move between
cores run with their sum over input channels split in two (schedules/split_reduction_conv.py) on
16-lane targets, and match onnxruntime on every x86 kernel variant this host runs."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from conftest import REPO, assert_outputs_match, onnxruntime_outputs, x86_kernel_presets
from onnx_builders import GraphBuilder

import slimtvm
from slimtvm.targets.kernel_target import KernelTarget
from slimtvm.targets.presets import resolve_target

SPLIT = "input channels summed in two halves"


def _projection_block(in_channels: int, out_channels: int, size: int, residual: bool, relu: bool, seed: int = 0):
    """A 1×1 conv (bias) on ``in_channels`` × size², with a residual add of a second 1×1 conv's
    output and a ReLU where asked: the shapes of MobileNetV2's 7×7 projections."""
    g = GraphBuilder(seed)
    x = g.input([1, in_channels, size, size])
    y = g.conv(x, in_channels, out_channels, 1, 1, (0, 0, 0, 0))
    if residual:
        y = g.node("Add", [y, g.conv(x, in_channels, out_channels, 1, 1, (0, 0, 0, 0))])
    if relu:
        y = g.relu(y)
    return g.model([y]), [1, in_channels, size, size]


CASES = {
    # name: (in, out, size, residual, relu, convs expected split)
    "960 → 160 at 7×7, residual add": (960, 160, 7, True, False, 2),
    "576 → 160 at 7×7, ReLU": (576, 160, 7, False, True, 1),
    "1024 → 128 at 6×6": (1024, 128, 6, False, False, 1),
    "960 → 320 at 7×7 (1.2 MB of weights: direct)": (960, 320, 7, False, False, 0),
    "160 → 960 at 7×7 (31 KB of input: direct)": (160, 960, 7, False, False, 0),
    "1024 → 256 at 14×14 (direct)": (1024, 256, 14, False, False, 0),
}


@pytest.mark.parametrize("target", x86_kernel_presets() or ["host"])
@pytest.mark.parametrize("name", list(CASES))
def test_split_reduction_convs_match_onnxruntime(name, target, tmp_path):
    in_channels, out_channels, size, residual, relu, split = CASES[name]
    model, shape = _projection_block(in_channels, out_channels, size, residual, relu)
    artifact = slimtvm.compile(model, str(tmp_path / "m.so"), target=target)
    plans = [layer["plan"] for layer in artifact.manifest["layers"] if layer["op"] == "conv2d"]
    wide = KernelTarget.of(resolve_target(target).tvm_target()).lanes >= 16  # 8-lane builds keep the direct kernel
    assert sum(SPLIT in plan for plan in plans) == (split if wide else 0), plans
    inputs = {"x": np.random.default_rng(1).standard_normal(shape).astype(np.float32)}
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))


def test_the_halves_are_the_outermost_parallel_split_and_both_loops_have_enough_chunks():
    """The partial sums' parallel loop runs the two halves outermost (TVM's pool hands thread 0
    the first half of the loop: at 2 threads, the input channels its own core wrote when the
    kernel before split its output by channel groups), then the sum's loop runs channel blocks
    outermost; each has at least 64 chunks (issue 16's many-core line)."""
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from parallel_chunks import parallel_extents

    model, _ = _projection_block(960, 160, 7, residual=False, relu=False)
    kernels = parallel_extents(model, "x86-64-avx512", with_loop_names=True)
    split = [loops for kernel, loops in kernels.items() if "split" in kernel]
    assert len(split) == 1, kernels
    (partial_name, partial_chunks), (sum_name, sum_chunks) = split[0]
    assert partial_chunks == 2 * 5 * 7 and partial_name.startswith("h_"), split  # halves × 2-block groups × rows
    assert sum_chunks == 10 * 7 and min(partial_chunks, sum_chunks) >= 64, split
