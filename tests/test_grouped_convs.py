"""Grouped convs (1 < groups, not depthwise) run on x86 as one banded conv on block-diagonal
weights, or as one conv per group where the band would be more than half a dense conv
(lowering/split_grouped_convs.py, lowering/banded_layers.py), against onnxruntime on every x86
build this host runs: ShuffleNet v1's unit (group-4 1×1 convs of 68 or 34 channels per group,
channel shuffle, depthwise 3×3), ResNeXt's bottleneck (32 groups), a strided 3×3 grouped conv,
and groups whose channels fill blocks (RegNet's). None is left on the generic schedule; a binary
grouped conv stays whole, on the binary kernel. The banded kernel and the channel-permutation
kernel are also checked alone against numpy."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import tvm
import tvm_ffi
from conftest import assert_outputs_match, onnxruntime_outputs, x86_kernel_presets
from onnx_builders import GraphBuilder, digits_like_input

import slimtvm
from slimtvm.targets.kernel_target import KernelTarget
from slimtvm.targets.presets import resolve_target

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pass(artifact, name: str) -> dict:
    return next(p for p in artifact.manifest["passes"] if p["name"] == name)


def _shufflenet_unit(channels: int = 272, groups: int = 4, size: int = 14):
    g = GraphBuilder(seed=4)
    x = g.input([1, channels, size, size])
    y = g.relu(g.batchnorm(g.conv(x, channels, channels, kernel=1, groups=groups, bias=False), channels))
    per_group = channels // groups
    shuffled = g.node("Reshape", [y, g.const(np.array([1, groups, per_group, size, size]), "shape", np.int64)])
    shuffled = g.node("Transpose", [shuffled], perm=[0, 2, 1, 3, 4])
    shuffled = g.node("Reshape", [shuffled, g.const(np.array([1, channels, size, size]), "shape", np.int64)])
    y = g.batchnorm(g.conv(shuffled, channels, channels, kernel=3, pads=(1, 1, 1, 1), groups=channels, bias=False), channels)
    y = g.batchnorm(g.conv(y, channels, channels, kernel=1, groups=groups, bias=False), channels)
    return g.model(g.relu(g.node("Add", [y, x]))), (1, channels, size, size)


def _strided_grouped(channels: int = 48, groups: int = 3):
    g = GraphBuilder(seed=5)
    x = g.input([1, channels, 15, 15])
    y = g.conv(x, channels, 2 * channels, kernel=3, stride=2, pads=(1, 1, 1, 1), groups=groups)
    return g.model(g.relu(y)), (1, channels, 15, 15)


def _blocked_groups():
    g = GraphBuilder(seed=6)
    x = g.input([1, 64, 10, 10])
    y = g.relu(g.conv(x, 64, 64, kernel=3, pads=(1, 1, 1, 1), groups=2))  # 32 per group: whole blocks
    return g.model(g.conv(y, 64, 32, kernel=1)), (1, 64, 10, 10)


@pytest.mark.parametrize("preset", x86_kernel_presets())
@pytest.mark.parametrize("build", [_shufflenet_unit, _strided_grouped, _blocked_groups])
def test_grouped_convs_match_onnxruntime_off_the_generic_schedule(tmp_path, preset, build):
    model, shape = build()
    inputs = {"x": digits_like_input(shape, seed=2)}
    artifact = slimtvm.compile(model, str(tmp_path / "grouped.so"), target=preset)
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
    assert _pass(artifact, "kernels")["generic_fallbacks"] == []


@pytest.mark.parametrize("preset", x86_kernel_presets())
@pytest.mark.parametrize("channels,groups,stride", [(32, 2, 2), (64, 4, 1), (64, 2, 1)])
def test_groups_that_fill_channel_blocks_run_one_banded_conv(tmp_path, preset, channels, groups, stride):
    """RegNet's grouped 3×3 convs (groups of 16 channels: one AVX-512 block, two AVX2 ones; and
    groups of 32): one banded conv reading its groups' blocks where they lie, where they were
    split into a copy of each group's channels, one conv per group and a concat."""
    g = GraphBuilder(seed=8)
    x = g.input([1, channels, 12, 12])
    y = g.relu(g.conv(x, channels, channels, kernel=3, stride=stride, pads=(1, 1, 1, 1), groups=groups))
    model = g.model(g.conv(y, channels, channels, kernel=1))
    inputs = {"x": digits_like_input((1, channels, 12, 12), seed=3)}
    artifact = slimtvm.compile(model, str(tmp_path / "blocks.so"), target=preset)
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
    assert _conv_kernels(artifact) == ["banded_conv2d", "conv2d"]
    assert _pass(artifact, "kernels")["by_family"] == {"banded_conv2d": 1, "conv2d": 1}


def test_a_binary_grouped_conv_stays_one_binary_conv(tmp_path):
    g = GraphBuilder(seed=7)
    x = g.input([1, 16, 8, 8])
    weight = np.where(np.random.default_rng(1).standard_normal((16, 4, 3, 3)) >= 0, 0.5, -0.5)
    y = g.node("Conv", [g.node("Sign", [x]), g.const(weight)], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=4)
    model = g.model(y)
    inputs = {"x": digits_like_input((1, 16, 8, 8), seed=3)}
    artifact = slimtvm.compile(model, str(tmp_path / "binary.so"))
    assert _pass(artifact, "binarize")["binary_convs"] == 1
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))


def _resnext_unit(width: int, size: int, stride: int, channels: int):
    """ResNeXt's bottleneck: 1×1, a 3×3 conv of 32 groups (``width`` / 32 channels each: fewer
    than a block, or more than one), 1×1, and the residual add where the stride is 1."""
    g = GraphBuilder(seed=9)
    x = g.input([1, channels, size, size])
    y = g.relu(g.batchnorm(g.conv(x, channels, width, kernel=1, bias=False), width))
    y = g.relu(g.batchnorm(g.conv(y, width, width, kernel=3, stride=stride, pads=(1, 1, 1, 1), groups=32, bias=False), width))
    y = g.batchnorm(g.conv(y, width, channels, kernel=1, bias=False), channels)
    return g.model(g.relu(g.node("Add", [y, x]) if stride == 1 else y)), (1, channels, size, size)


@pytest.mark.parametrize("preset", x86_kernel_presets())
@pytest.mark.parametrize("width,size,stride,channels", [(128, 10, 1, 64), (256, 9, 2, 64), (1024, 5, 1, 128)])
def test_resnext_units_run_their_32_group_convs_banded(tmp_path, preset, width, size, stride, channels):
    """More than 8 groups (ResNeXt's 32, of 4, 8 and 32 channels; strided and padded 3×3): one
    banded conv on block-diagonal weights, where TVM's generic grouped compute ran before; matches
    onnxruntime on both x86 builds."""
    model, shape = _resnext_unit(width, size, stride, channels)
    inputs = {"x": digits_like_input(shape, seed=5)}
    artifact = slimtvm.compile(model, str(tmp_path / "resnext.so"), target=preset)
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
    # the 1024 → 128 projection at 5×5 (102 KB of input, 512 KB of weights) sums its input
    # channels in two halves on 16-lane builds (schedules/split_reduction_conv.py)
    wide = KernelTarget.of(resolve_target(preset).tvm_target()).lanes >= 16
    projection = "split_reduction_conv2d" if wide and width == 1024 else "conv2d"
    assert _conv_kernels(artifact) == ["conv2d", "banded_conv2d", projection]
    assert _pass(artifact, "kernels")["generic_fallbacks"] == []


def _conv_kernels(artifact) -> list:
    return [layer["kernel"] for layer in artifact.manifest["layers"] if layer["op"] == "conv2d"]


@pytest.mark.parametrize("preset", x86_kernel_presets())
@pytest.mark.parametrize("channels,size", [(272, 14), (136, 28)])
def test_shufflenet_units_run_banded_convs_and_one_shuffle_kernel(tmp_path, preset, channels, size):
    """ShuffleNet v1 units whose groups (68, 34 channels) fill no 16- or 8-channel block: each
    grouped 1×1 conv is one banded conv (before: one conv per group on plain NCHW slices, with
    relayouts, slices and a concat around them) and the channel shuffle between the blocked convs
    one channel-permutation kernel (before: a relayout to NCHW, the shuffle, a relayout back);
    136 channels (not whole blocks) reach the first conv as a plain NCHW input. Matches
    onnxruntime."""
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from parallel_chunks import parallel_extents

    model, shape = _shufflenet_unit(channels, 4, size)
    inputs = {"x": digits_like_input(shape, seed=3)}
    artifact = slimtvm.compile(model, str(tmp_path / "unit.so"), target=preset)
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
    assert _conv_kernels(artifact) == ["banded_conv2d", "depthwise", "banded_conv2d"]
    kernels = parallel_extents(model, "x86-64-avx512" if preset == "host" else preset)
    assert sum("channel_permutation" in name for name in kernels) == 1
    relayouts = sum("channel_relayout" in name for name in kernels)
    assert relayouts <= (2 if channels % 16 == 0 else 4), sorted(kernels)  # the model's input and output (136: the plain residual path)


def _grouped_pointwise_model(channels: int, out_channels: int, groups: int, size: int, stem: bool):
    """A grouped 1×1 conv whose groups fill no channel block, after a dense 3×3 conv (a blocked
    input) or on the model's input."""
    g = GraphBuilder(seed=channels + groups)
    x = g.input([1, channels, size, size])
    y = g.relu(g.conv(x, channels, channels, kernel=3, pads=(1, 1, 1, 1))) if stem else x
    return g.model(g.relu(g.conv(y, channels, out_channels, kernel=1, groups=groups))), (1, channels, size, size)


@pytest.mark.parametrize("preset", x86_kernel_presets())
@pytest.mark.parametrize("channels,out_channels,groups,size,stem", [(96, 64, 8, 10, True), (40, 48, 4, 7, False), (64, 128, 16, 5, True)])
def test_grouped_convs_of_other_shapes_take_the_banded_kernel_and_match_onnxruntime(tmp_path, preset, channels, out_channels, groups, size, stem):
    """Groups of 12 → 8, 10 → 12 and 4 → 8 channels (16 groups: more than the split takes),
    blocked and plain NCHW inputs, output-block tiles of 1, 2 and 4 blocks as the lowering picks
    them: one banded conv, matching onnxruntime."""
    model, shape = _grouped_pointwise_model(channels, out_channels, groups, size, stem)
    inputs = {"x": digits_like_input(shape, seed=4)}
    artifact = slimtvm.compile(model, str(tmp_path / "banded.so"), target=preset)
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
    assert _conv_kernels(artifact)[-1] == "banded_conv2d"


def test_a_pruned_conv_whose_zeros_leave_a_band_keeps_the_dense_kernel(tmp_path):
    """The banded kernel takes block-diagonal weights the grouped-conv pass made, not any weight
    whose zeros happen to leave a band (a pruned conv keeps the dense and sparse kernels' own
    choice): a 1×1 conv whose blocks of 16 output channels each read a third of the inputs."""
    rng = np.random.default_rng(3)
    weight = np.zeros((64, 96, 1, 1))
    for first in range(0, 64, 16):
        start = int(rng.integers(0, 64))
        weight[first : first + 16, start : start + 32] = rng.normal(0, 0.3, size=(16, 32, 1, 1))
    g = GraphBuilder(seed=3)
    x = g.input([1, 96, 10, 10])
    y = g.relu(g.conv(x, 96, 96, kernel=3, pads=(1, 1, 1, 1)))
    model = g.model(g.node("Conv", [y, g.const(weight)], kernel_shape=[1, 1]))
    inputs = {"x": digits_like_input((1, 96, 10, 10), seed=4)}
    artifact = slimtvm.compile(model, str(tmp_path / "pruned.so"), sparse="never")
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
    assert _conv_kernels(artifact)[-1] == "conv2d"


def test_the_banded_reduction_runs_each_tiles_own_count():
    """After scheduling, the banded kernel's reduction loop has the tile's count as its extent (a
    select on the tile), not the widest band (lowering/banded_trip_counts.py): what skips the
    zero weights past each band, which outputs alone cannot show."""
    from tvm.s_tir import dlight

    from slimtvm.conv_geometry import ConvGeometry
    from slimtvm.lowering.banded_trip_counts import set_banded_trip_counts
    from slimtvm.schedules.banded_conv import BandedShape, banded_conv2d_primfunc
    from slimtvm.schedules.registry import default_rules

    shape = BandedShape(1, 9, 9, ConvGeometry.of(28, 28, 1, 1), 16, 1, (0, 0, 0, 34, 34, 68, 68, 102, 102), (34, 34, 68, 34, 68, 34, 68, 34, 34))
    mod = tvm.IRModule({"banded": banded_conv2d_primfunc(shape)})
    with tvm.target.Target({"kind": "llvm", "mcpu": "znver4"}):
        scheduled = dlight.ApplyDefaultSchedule(*default_rules(16))(mod)
    loops = lambda m: [node for node in _walk(m["banded"].body) if isinstance(node, tvm.tirx.stmt.For)]  # noqa: E731
    assert all(isinstance(loop.extent, tvm.tirx.IntImm) for loop in loops(scheduled))
    counted = set_banded_trip_counts()(scheduled)
    variable = [loop for loop in loops(counted) if not isinstance(loop.extent, tvm.tirx.IntImm)]
    assert len(variable) == 1 and "Select" in str(variable[0].extent)


def _walk(node) -> list:
    found = []
    tvm_ffi.structural_walk(node, lambda value: found.append(value))
    return found


@pytest.mark.parametrize("block,mcpu", [(16, "znver4"), (8, "haswell")])
def test_the_channel_permutation_kernel_matches_numpy(block, mcpu):
    """Random output → input channel maps with zeros (−1), images whose pixels do not split into
    equal runs (5 × 7), two images: the kernel against numpy's indexing, for 16-lane (AVX-512)
    and 8-lane (AVX2) blocks."""
    from slimtvm.schedules.channel_permutation import channel_permutation_primfunc

    if mcpu == "znver4" and "host" not in x86_kernel_presets():
        pytest.skip("this host does not run AVX-512 code")
    rng = np.random.default_rng(block)
    in_blocks, out_blocks, height, width = 3, 4, 5, 7
    sources = rng.integers(-1, in_blocks * block, size=out_blocks * block)
    func = channel_permutation_primfunc(2, in_blocks, height, width, block, tuple(int(s) for s in sources))
    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=tvm.target.Target({"kind": "llvm", "mcpu": mcpu}))
    x = rng.standard_normal((2, in_blocks, height, width, block)).astype(np.float32)
    out = tvm.runtime.empty((2, out_blocks, height, width, block), "float32", tvm.cpu())
    lib["main"](tvm.runtime.tensor(x), out)
    plain = x.transpose(0, 1, 4, 2, 3).reshape(2, in_blocks * block, height, width)
    expected = np.where(sources[None, :, None, None] >= 0, plain[:, np.maximum(sources, 0)], 0)
    np.testing.assert_array_equal(out.numpy(), expected.reshape(2, out_blocks, block, height, width).transpose(0, 1, 3, 4, 2))
