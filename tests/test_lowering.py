"""The fp32 lowering: graph clean-ups and layout passes are exact, and the blocked-layout kernels
and fallback schedules compute what onnxruntime computes."""

from __future__ import annotations

import os
import sys

import pytest
import tvm
from conftest import REPO, assert_outputs_match, onnxruntime_outputs
from onnx_builders import GraphBuilder, digits_like_input
from test_fold_batchnorm import relax_op_counts

from slimtvm.frontend.onnx_import import import_onnx
from slimtvm.lowering.conv_layouts import convert_layout_or_keep
from slimtvm.passes.sequence import GraphPasses
from slimtvm.targets.kernel_target import KernelTarget


def lowered(model):
    target = tvm.target.Target({"kind": "llvm"})
    mod = import_onnx(model).mod
    with target:
        mod = tvm.transform.Sequential(GraphPasses().sequence())(mod)
        mod = convert_layout_or_keep(KernelTarget.of(target).channel_block)(mod)
    return mod


def test_rgb_stem_reads_the_plain_input_and_writes_blocked_output(compile_and_run):
    """3 input channels are not a block: the stem conv reads NCHW and writes NCHW8c, no padding."""
    g = GraphBuilder(seed=3)
    x = g.input([1, 3, 20, 20])
    y = g.relu(g.conv(x, 3, 16, kernel=7, stride=2, pads=(3, 3, 3, 3)))
    model = g.model(g.conv(y, 16, 8, kernel=3, pads=(1, 1, 1, 1)))
    mod = lowered(model)
    convs = [call for call in _calls(mod, "relax.nn.conv2d")]
    assert [(c.attrs.data_layout, c.attrs.out_layout) for c in convs] == [("NCHW", "NCHW8c"), ("NCHW8c", "NCHW8c")]
    inputs = {"x": digits_like_input((1, 3, 20, 20), seed=4)}
    outputs, _ = compile_and_run(model, inputs)
    assert_outputs_match(outputs, onnxruntime_outputs(model, inputs))


def _calls(mod, op_name):
    from tvm import relax

    found = []
    relax.analysis.post_order_visit(mod["main"], lambda e: found.append(e) if isinstance(e, relax.Call) and getattr(e.op, "name", "") == op_name else None)
    return found


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_blocked_convs_with_groups_match(compile_and_run, groups):
    """Channel counts that are multiples of 8 take the NCHW8c path, grouped convs included."""
    g = GraphBuilder(seed=groups)
    x = g.input([1, 16, 9, 9])
    y = g.conv(x, 16, 32, kernel=3, stride=1, pads=(1, 0, 2, 1), groups=groups)
    y = g.conv(g.relu(y), 32, 16, kernel=1, stride=2)
    model = g.model(g.node("MaxPool", [y], kernel_shape=[2, 2], strides=[1, 1]))
    inputs = {"x": digits_like_input((1, 16, 9, 9), seed=5)}
    outputs, _ = compile_and_run(model, inputs)
    assert_outputs_match(outputs, onnxruntime_outputs(model, inputs))


def test_unit_reduction_conv_adds_its_bias_once(compile_and_run):
    """A 1×1 conv over one channel has only unit reduction loops; a schedule that treats it as
    element-wise and inlines the bias into it adds the bias twice (seen with dlight's helpers)."""
    g = GraphBuilder(seed=6)
    x = g.input([1, 1, 4, 4])
    model = g.model(g.relu(g.conv(x, 1, 16, kernel=1)))
    inputs = {"x": digits_like_input((1, 1, 4, 4), seed=6)}
    outputs, _ = compile_and_run(model, inputs)
    assert_outputs_match(outputs, onnxruntime_outputs(model, inputs))


def test_sum_becomes_adds_and_stays_exact(compile_and_run):
    g = GraphBuilder(seed=8)
    x = g.input([1, 8, 6, 6])
    a = g.conv(x, 8, 8, kernel=1)
    b = g.relu(a)
    c = g.node("GlobalAveragePool", [x])  # broadcasts against the others
    model = g.model(g.node("Sum", [a, b, c]))
    assert relax_op_counts(import_onnx(model).mod).get("relax.stack", 0) == 0
    inputs = {"x": digits_like_input((1, 8, 6, 6), seed=9)}
    outputs, _ = compile_and_run(model, inputs)
    assert_outputs_match(outputs, onnxruntime_outputs(model, inputs))


def test_dropout_is_removed(compile_and_run):
    g = GraphBuilder(seed=10)
    x = g.input([1, 8, 5, 5])
    model = g.model(g.conv(g.node("Dropout", [g.relu(g.conv(x, 8, 8, kernel=1))]), 8, 8, kernel=1))
    assert relax_op_counts(lowered(model)).get("relax.nn.dropout", 0) == 0
    inputs = {"x": digits_like_input((1, 8, 5, 5), seed=11)}
    outputs, _ = compile_and_run(model, inputs)
    assert_outputs_match(outputs, onnxruntime_outputs(model, inputs))


def test_threads_default_to_all_physical_cores():
    """TVM would size its pool at half the logical CPUs; import slimtvm asks for every physical core."""
    import os

    import psutil

    expected = min(psutil.cpu_count(logical=False) or 1, len(os.sched_getaffinity(0)))
    assert os.environ["TVM_NUM_THREADS"] == str(expected)


@pytest.mark.parametrize(
    "oc_chunks,height,width,expected",
    [
        (8, 56, 56, (4, 3, 1)),  # 12 accumulators: 4 blocks × 3 pixels; one-row chunks: 2 groups × 56 rows ≥ 64 chunks
        (64, 7, 7, (4, 3, 7)),  # the whole 7 × 7 image is one chunk (16 groups): a row of 7 would be 3 + 3 + 1
        (18, 56, 56, (6, 2, 2)),  # MobileNetV2's 144 channels: 3 groups × 28 chunks of 2 rows
        (3, 112, 112, (3, 4, 1)),  # 24 channels at 112 × 112: one group, one row per chunk
        (5, 7, 7, (1, 7, 1)),  # no multi-block tile divides 5: one block; one-row chunks, the 12-pixel tile evened to 7
        (2, 1, 300, (2, 6, 1)),  # rows wider than a chunk: one row per chunk
        (1, 1, 1, (1, 1, 1)),
    ],
)
def test_default_tile_fills_the_accumulator_budget(oc_chunks, height, width, expected):
    from slimtvm.schedules.conv2d_nchwc import default_tile

    tile = default_tile(oc_chunks, height, width)
    assert (tile.oc_tile, tile.px, tile.rows, tile.channels_outside) == (*expected, False)
    assert tile.oc_tile * tile.px <= 12
    assert height % tile.rows == 0


@pytest.mark.parametrize(
    "oc_chunks,size,expected",
    [
        (32, 40, (2, 10)),  # 2 × 10 where 10 divides the chunk (16 groups × 40 one-row chunks)
        (32, 56, (2, 8)),  # 4-row chunks of 224 pixels: 2 × 10 would leave a tail, 8 divides
        (4, 28, (2, 7)),  # one-row chunks of 28 pixels: 7 divides
        (9, 56, (3, 7)),
        (5, 56, (5, 4)),  # five blocks (neither 2 nor 3 divides): 5 × 4, 20 accumulators, where 1 × 14 ran 22% slower
        (7, 56, (1, 14)),  # seven blocks: 1 × 15 leaves a tail in 224 pixels, 14 divides
        (1, 56, (1, 14)),  # one block alone, one-row chunks of 56 pixels, 15 evened to 14
        (2, 13, (2, 7)),  # one-row chunks of 13 pixels: evened to 7 + 6, nothing from 7 to 10 divides 13
    ],
)
def test_avx512_tile_leaves_registers_for_broadcasts_and_weights(oc_chunks, size, expected):
    from slimtvm.schedules.conv2d_nchwc import default_tile

    tile = default_tile(oc_chunks, size, size, 24, 64, 9, lanes=16)
    assert (tile.oc_tile, tile.px) == expected
    assert tile.oc_tile * tile.px + tile.px + tile.oc_tile <= 32  # accumulators, broadcasts, weights: no spill


@pytest.mark.parametrize(
    "oc_chunks,size,in_channels,expected",
    [
        (4, 14, 384, (2, 4, 4)),  # MobileNetV2's 384 → 64 at 14×14: 2 groups × 49 tiles of 4 pixels (28 one-row chunks)
        (10, 7, 960, (1, 7, 7)),  # 960 → 160 at 7×7: 10 one-block groups × 7 tiles of 7 pixels (35 one-row chunks)
        (2, 28, 192, (2, 7, 7)),  # 192 → 32 at 28×28: 112 tiles of 7 pixels (28 one-row chunks)
        (8, 14, 64, (2, 7, 7)),  # 4 groups × 14 one-row chunks = 56: 4 × 28 tiles of 7 pixels, 112 chunks (2 tiles each: 56)
    ],
)
def test_avx512_1x1_convs_with_too_few_row_chunks_take_chunks_of_whole_tiles(oc_chunks, size, in_channels, expected):
    """Where one-row chunks leave fewer than 64 (issue 16), the chunk is a number of whole register
    tiles of the flattened pixels: (oc_tile, px, chunk_pixels), ≥ 64 chunks, px dividing the chunk."""
    from slimtvm.schedules.conv2d_nchwc import default_tile

    tile = default_tile(oc_chunks, size, size, 24, in_channels, 1, lanes=16)
    chunks = (oc_chunks // tile.oc_tile) * (size * size // tile.chunk_pixels)
    assert (tile.oc_tile, tile.px, tile.chunk_pixels) == expected
    assert chunks >= 64 and tile.chunk_pixels % tile.px == 0 and (size * size) % tile.chunk_pixels == 0


@pytest.mark.parametrize(
    "oc_chunks,size,expected",
    [
        (25, 7, (5, 4, 4)),  # RegNetX's 400 → 400 at 7×7: 5 groups × 13 one-tile chunks (the last of 1 pixel) = 65
        (25, 14, (5, 4, 0)),  # 5 groups × 14 one-row chunks = 70: whole rows
        (5, 7, (1, 7, 0)),  # one group of five blocks would leave 13 chunks: one block × 7, 35 one-row chunks as before
        (5, 14, (1, 14, 14)),  # 49 four-pixel chunks would be too few: one block × 14, 70 chunks
    ],
)
def test_avx512_five_block_tiles_keep_enough_parallel_chunks(oc_chunks, size, expected):
    """Channel blocks that only 5 (and 1) divide take 5 × 4 tiles where that leaves 64 parallel
    chunks — with one-tile chunks of the flattened pixels whose last one is partial where whole
    rows do not (:func:`ragged_tile`) — and otherwise the one-block tile they had."""
    from slimtvm.schedules.conv2d_nchwc import default_tile, parallel_chunks

    tile = default_tile(oc_chunks, size, size, 24, oc_chunks * 16, 1, lanes=16)
    assert (tile.oc_tile, tile.px, tile.chunk_pixels) == expected
    if tile.oc_tile == 5:
        assert parallel_chunks(tile, oc_chunks, size, size) >= 64


@pytest.mark.parametrize("in_channels,taps,expected", [(3, 49, (2, 8)), (16, 1, (2, 8)), (32, 1, (2, 10)), (64, 9, (2, 10))])
def test_avx512_convs_reading_one_channel_block_take_shorter_tiles(in_channels, taps, expected):
    from slimtvm.schedules.conv2d_nchwc import default_tile

    tile = default_tile(4, 40, 40, 24, in_channels, taps, lanes=16)  # one-row chunks of 40 pixels: 8 and 10 divide
    assert (tile.oc_tile, tile.px) == expected


@pytest.mark.parametrize("stride,kernel,expected", [(2, 3, (2, 8)), (1, 3, (2, 10)), (2, 1, (2, 10))])
def test_avx512_strided_convs_wider_than_their_stride_take_shorter_tiles(stride, kernel, expected):
    """A 3×3/2 conv's kernel column 2 reads the input column of the next pixel's column 0, so LLVM
    keeps broadcasts live across the columns: 2 × 8 where the register-fitting tile is 2 × 10
    (stride-1 3×3 and 1×1/2 convs keep 2 × 10)."""
    from slimtvm.schedules.conv2d_nchwc import default_tile

    tile = default_tile(4, 40, 40, 24, 64, kernel * kernel, lanes=16, column_stride=stride, kernel_w=kernel)
    assert (tile.oc_tile, tile.px) == expected


@pytest.mark.parametrize("stride", [1, 2, 3])
def test_column_stride_is_read_from_the_conv_compute(stride):
    """``column_stride`` reads the stride from TOPI's conv2d_NCHWc compute (3×3, dilation 2, so the
    kernel column's coefficient differs from the stride's), as the schedule rule sees it."""
    import tvm
    from tvm import s_tir, te, topi

    from slimtvm.schedules.conv2d_nchwc import CONV_BLOCK, column_stride

    data = te.placeholder((1, 2, 20, 20, 16), name="data")
    kernel = te.placeholder((2, 2, 3, 3, 16, 16), name="kernel")
    with tvm.target.Target("llvm"):  # TOPI's x86 compute asks for a target
        out = topi.nn.conv2d_NCHWc(data, kernel, (stride, stride), (1, 1), (2, 2), "NCHW16c", "NCHW16c")
    sch = s_tir.Schedule(te.create_prim_func([data, kernel, out]))
    assert column_stride(sch, sch.get_sblock(CONV_BLOCK)) == stride


@pytest.mark.parametrize("in_channels,taps,expected", [(256, 9, True), (128, 9, True), (64, 9, False), (1024, 1, False), (3, 49, False)])
def test_input_channels_loop_outside_the_tiles_for_deep_3x3_convs(in_channels, taps, expected):
    from slimtvm.schedules.conv2d_nchwc import default_tile

    assert default_tile(32, 14, 14, 12, in_channels, taps).channels_outside is expected
    assert default_tile(32, 14, 14, 24, in_channels, taps, lanes=16).channels_outside is False  # measured slower on AVX-512


def test_conv_transpose_after_blocked_conv_stays_plain_and_exact(compile_and_run):
    """blocked conv → MaxPool → ConvTranspose made TVM's ConvertLayout fail (found by hypothesis);
    conv2d_transpose now asks for NCHW, so the graph converts without the fallback and is exact."""
    import warnings

    g = GraphBuilder(seed=12)
    x = g.input([1, 2, 4, 4])
    y = g.node("MaxPool", [g.batchnorm(g.conv(x, 2, 8, kernel=1), 8)], kernel_shape=[2, 2], strides=[1, 1])
    y = g.batchnorm(g.conv_transpose(y, 8, 8, kernel=2, stride=2), 8)
    model = g.model(g.gemm(g.node("Flatten", [y]), 8 * 6 * 6, 3))
    inputs = {"x": digits_like_input((1, 2, 4, 4), seed=13)}
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="blocked layouts not applied")
        outputs, _ = compile_and_run(model, inputs)
    assert_outputs_match(outputs, onnxruntime_outputs(model, inputs))


def test_layout_conversion_failure_keeps_the_module_and_warns():
    """If TVM's ConvertLayout raises on some graph, the lowering keeps plain layouts (exact, slower)."""
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    g = GraphBuilder(seed=3)
    model = g.model(g.conv(g.input([1, 8, 6, 6]), 8, 8, kernel=3, pads=(1, 1, 1, 1)))
    mod = from_onnx(model)

    def failing_callback(call, block):
        raise RuntimeError("Layouts must have the same size")

    with pytest.warns(UserWarning, match="blocked layouts not applied .*Layouts must have the same size"):
        converted = convert_layout_or_keep(8, failing_callback)(mod)
    tvm.ir.assert_structural_equal(converted, mod)


def test_a_16_lane_target_pads_24_channel_convs_and_keeps_16_channel_blocks(tmp_path):
    """On AVX-512 a 24-channel conv gets zero filters up to 32 (lowering/pad_channels.py), so every
    conv keeps a 16-channel slimtvm kernel; a depthwise conv on a 24-channel model input gets its
    input padded with zero channels (since session 30; before, the whole model took 8-channel
    blocks); where the padding cannot apply (a depthwise conv whose weights are a model input) the
    whole model falls back to 8-channel blocks, since ConvertLayout cannot join 8- and 16-channel
    blocks. Where this host runs AVX-512 the three builds match onnxruntime."""
    from conftest import x86_kernel_presets

    import slimtvm
    from slimtvm.compiler.layer_table import recorded_decisions
    from slimtvm.targets.presets import resolve_target

    target = resolve_target("x86-64-avx512").tvm_target()
    g = GraphBuilder(seed=8)
    x = g.input([1, 3, 12, 12])
    y = g.relu(g.conv(x, 3, 32, kernel=3, pads=(1, 1, 1, 1)))
    y = g.relu(g.conv(y, 32, 24, kernel=3, pads=(1, 1, 1, 1)))
    y = g.conv(y, 24, 24, kernel=3, pads=(1, 1, 1, 1), groups=24)
    padded = g.model(g.conv(y, 24, 32, kernel=1))
    reports, decisions = recorded_decisions(import_onnx(padded), target)
    assert decisions.convs == [
        "fp32 conv, plain NCHW input → NCHW16c kernel",
        "fp32 Winograd F(2×2, 3×3) conv, NCHW16c kernel (2.25× fewer multiply-adds)",
        "fp32 depthwise conv, NCHW16c kernel",
        "fp32 conv, blocked NCHW16c kernel",
    ]
    assert reports["kernels"]["generic_fallbacks"] == [] and reports["kernels"]["by_family"] == {"conv2d": 2, "depthwise": 1, "winograd_conv2d": 1}

    g = GraphBuilder(seed=9)
    x = g.input([1, 24, 12, 12])
    y = g.conv(g.relu(x), 24, 24, kernel=3, pads=(1, 1, 1, 1), groups=24)
    padded_input = g.model(g.conv(y, 24, 32, kernel=1))
    reports, decisions = recorded_decisions(import_onnx(padded_input), target)
    assert decisions.convs == ["fp32 depthwise conv, NCHW16c kernel", "fp32 conv, blocked NCHW16c kernel"]
    assert reports["kernels"]["generic_fallbacks"] == []

    g = GraphBuilder(seed=9)
    x = g.input([1, 24, 12, 12])
    weight = g.input([24, 1, 3, 3], name="w")
    y = g.node("Conv", [g.relu(x), weight], pads=[1, 1, 1, 1], group=24)
    fallback = g.model(g.conv(y, 24, 32, kernel=1))
    reports, decisions = recorded_decisions(import_onnx(fallback), target)
    assert decisions.convs == ["fp32 depthwise conv, NCHW8c kernel", "fp32 conv, blocked NCHW8c kernel"]
    assert reports["kernels"]["generic_fallbacks"] == []
    if "host" not in x86_kernel_presets():
        return  # no AVX-512 here: the decisions above are what this test can check
    for model, shape in ((padded, (1, 3, 12, 12)), (padded_input, (1, 24, 12, 12)), (fallback, (1, 24, 12, 12))):
        inputs = {"x": digits_like_input(shape, seed=9)}
        if model is fallback:
            inputs["w"] = digits_like_input((24, 1, 3, 3), seed=3)
        artifact = slimtvm.compile(model, str(tmp_path / "model.so"), target="x86-64-avx512")
        assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))


@pytest.mark.parametrize("preset", ["x86-64", "host"])
def test_odd_channel_counts_and_classifiers_are_padded_to_whole_blocks(tmp_path, preset):
    """A conv left with 41 filters (as the exact channel removal leaves pruned layers) and a
    1000-class classifier get zero filters / columns up to the channel block: every conv keeps a
    slimtvm kernel, the classifier's columns split into whole vectors, and the outputs are exact."""
    from conftest import x86_kernel_presets

    import slimtvm
    from slimtvm.compiler.layer_table import recorded_decisions
    from slimtvm.targets.presets import resolve_target

    if preset not in x86_kernel_presets():
        pytest.skip(f"{preset} kernels do not run on this host")
    g = GraphBuilder(seed=11)
    x = g.input([1, 3, 10, 10])
    y = g.relu(g.conv(x, 3, 41, kernel=3, pads=(1, 1, 1, 1)))
    y = g.relu(g.conv(y, 41, 13, kernel=3, pads=(1, 1, 1, 1)))
    pooled = g.node("Flatten", [g.node("GlobalAveragePool", [y])])
    logits = g.gemm(g.relu(g.gemm(pooled, 13, 1000)), 1000, 10)
    model = g.model(logits)
    reports, decisions = recorded_decisions(import_onnx(model), resolve_target(preset).tvm_target())
    assert reports["kernels"]["generic_fallbacks"] == [] and all("generic" not in plan for plan in decisions.convs)
    inputs = {"x": digits_like_input((1, 3, 10, 10), seed=3)}
    artifact = slimtvm.compile(model, str(tmp_path / "model.so"), target=preset)
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))


@pytest.mark.parametrize("preset", ["x86-64", "host"])
def test_split_k_classifiers_match_onnxruntime(tmp_path, preset):
    """Classifier heads at batch 1 and 3 run in the split-K form (whole rows of the weight per
    task, partial rows summed in a final pass with the fused bias and ReLU): exact against
    onnxruntime, with a reduction that unrolls by 8 (512) and one that does not (296)."""
    from conftest import x86_kernel_presets

    import slimtvm
    from slimtvm.schedules.dense import default_dense_tile
    from slimtvm.targets.presets import resolve_target, simd_lanes

    if preset not in x86_kernel_presets():
        pytest.skip(f"{preset} kernels do not run on this host")
    lanes = simd_lanes(resolve_target(preset).tvm_target())
    for batch, reduction in ((1, 512), (3, 296)):
        assert default_dense_tile(batch, 96, reduction, lanes).k_tasks > 1
        g = GraphBuilder(seed=12 + batch)
        x = g.input([batch, reduction])
        model = g.model(g.gemm(g.relu(g.gemm(x, reduction, 96)), 96, 48))
        inputs = {"x": digits_like_input((batch, reduction), seed=batch)}
        artifact = slimtvm.compile(model, str(tmp_path / f"head{batch}.so"), target=preset)
        assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))


def test_non_max_suppression_builds_and_selects_what_onnxruntime_selects(tmp_path):
    """TOPI's NMS kernel has opaque blocks (sort, searchsorted): the generic rule leaves them to
    TVM's default lowering. Before, it inlined a gather into them and the build failed."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    import slimtvm

    constants = [
        helper.make_tensor("max_out", TensorProto.INT64, [1], [3]),
        helper.make_tensor("iou", TensorProto.FLOAT, [1], [0.5]),
        helper.make_tensor("score", TensorProto.FLOAT, [1], [0.0]),
    ]
    graph = helper.make_graph(
        [helper.make_node("NonMaxSuppression", ["boxes", "scores", "max_out", "iou", "score"], ["selected"])],
        "nms",
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 6, 4]), helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1, 6])],
        [helper.make_tensor_value_info("selected", TensorProto.INT64, None)],
        initializer=constants,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    path = str(tmp_path / "nms.onnx")
    onnx.save(model, path)
    rng = np.random.default_rng(0)
    boxes = rng.uniform(0, 1, (1, 6, 4)).astype(np.float32)
    boxes[..., 2:] += boxes[..., :2]
    inputs = {"boxes": boxes, "scores": rng.uniform(0, 1, (1, 1, 6)).astype(np.float32)}
    ours = slimtvm.compile(path, str(tmp_path / "nms.so")).load().run(inputs)["selected"]
    expected = onnxruntime_outputs(model, inputs)["selected"]
    # TVM's NMS keeps its output at max_out rows per class (padding rows after the selected ones)
    np.testing.assert_array_equal(ours[: len(expected)], expected)


def test_plain_layout_pooling_matches_onnxruntime(compile_and_run):
    """Pools that stay in plain NCHW (5 channels are no block) take the row-unrolled window
    schedule over a separate padded copy — with padding, stride 2, a row that is not a whole
    number of unrolled groups, and average pooling without the padding — and compute what
    onnxruntime computes; a channel-blocked pool keeps its own schedule."""
    from tvm import te, topi

    from slimtvm.schedules.generic_cpu import _plain_window

    g = GraphBuilder(seed=5)
    x = g.input([1, 5, 23, 29])
    pooled = g.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    model = g.model(g.node("AveragePool", [pooled], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=0))
    inputs = {"x": digits_like_input((1, 5, 23, 29), seed=6)}
    outputs, _ = compile_and_run(model, inputs)
    assert_outputs_match(outputs, onnxruntime_outputs(model, inputs))

    def pool_block(shape, layout):
        data = te.placeholder(shape, "float32", name="x")
        func = te.create_prim_func([data, topi.nn.pool2d(data, (3, 3), (2, 2), (1, 1), (1, 1, 1, 1), "max", layout=layout)])
        sch = tvm.s_tir.Schedule(func)
        return sch.get(sch.get_sblock("pool_max"))

    assert _plain_window(pool_block((1, 5, 23, 29), "NCHW"))
    assert not _plain_window(pool_block((1, 1, 23, 29, 16), "NCHW16c"))


@pytest.mark.parametrize("preset", ["x86-64", "host"])
def test_channel_blocked_pooling_with_borders_matches_onnxruntime(tmp_path, preset):
    """Pools after a blocked conv run with their rows' border columns split off (the interior
    drops the padding check): ResNet's 3×3/2 max-pool with padding 1, SPPF's 5×5/1 max-pool with
    padding 2, an average pool that leaves out the padding, a pool whose 4-column rows are too
    narrow to split (the split needs more than 4), and a global mean, match onnxruntime."""
    from conftest import x86_kernel_presets

    import slimtvm

    if preset not in x86_kernel_presets():
        pytest.skip(f"{preset} kernels do not run on this host")
    g = GraphBuilder(seed=12)
    x = g.input([1, 3, 21, 26])
    y = g.relu(g.conv(x, 3, 32, kernel=3, pads=(1, 1, 1, 1)))
    stem_pool = g.node("MaxPool", [y], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    sppf = g.node("MaxPool", [stem_pool], kernel_shape=[5, 5], strides=[1, 1], pads=[2, 2, 2, 2])
    average = g.node("AveragePool", [sppf], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], count_include_pad=0)
    narrow = g.node("MaxPool", [average], kernel_shape=[3, 3], strides=[4, 4], pads=[1, 1, 1, 1])  # 13 → 4 columns
    model = g.model([g.node("Flatten", [g.node("GlobalAveragePool", [narrow])]), average])
    inputs = {"x": digits_like_input((1, 3, 21, 26), seed=4)}
    artifact = slimtvm.compile(model, str(tmp_path / "model.so"), target=preset)
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))


@pytest.mark.parametrize("preset", ["x86-64", "x86-64-avx512"])
def test_small_image_convs_prefetch_the_next_channel_group_on_avx512(tmp_path, preset):
    """RegNetX's 400 → 400 1×1 conv at 7×7 (640 KB of weights, 25 channel blocks): on 16-lane
    targets 5 × 4 tiles in one-tile chunks, the last one a single pixel, each chunk prefetching
    its share of the next group's weights (128 KB ahead, more than L1: `prefetcht1` in the
    library, into L2); the AVX2 build (50
    blocks of 8, 2-block tiles) prefetches nothing. Both match onnxruntime where this host runs
    them."""
    g = GraphBuilder(seed=23)
    x = g.input([1, 400, 7, 7])
    y = g.relu(g.conv(x, 400, 400, kernel=1))
    model = g.model(g.relu(g.node("Add", [g.conv(y, 400, 400, kernel=1), x])))
    disassembly = _check_prefetch_only_on_avx512(tmp_path, preset, model, (1, 400, 7, 7), seed=24)
    assert disassembly is None or "prefetcht0" not in disassembly


@pytest.mark.parametrize("preset", ["x86-64", "x86-64-avx512"])
def test_convs_with_megabytes_of_weights_prefetch_the_next_group_on_avx512(tmp_path, preset):
    """Convs with megabytes of weights whose parallel chunks hold several pixel tiles (here 1×1,
    1024 → 1024 channels, 4 MB, at 14×14: chunks of 7 rows, fourteen tiles) run in the per-tile
    form on 16-lane targets, each chunk prefetching its share of the next channel group's weights
    (128 KB ahead, more than L1 holds: `prefetcht1` in the library, into L2; the 256 → 1024 conv
    before it prefetches its next 32 KB group into L1). Until session 45 they ran their tiles in
    chunks of input channels, prefetching the next chunk, 4–12% slower in ResNet-50 and
    ConvNeXt-T on Zen 4. The AVX2 build prefetches nothing. Both match onnxruntime where this
    host runs them."""
    import re

    from conftest import scheduled_kernels

    from slimtvm.schedules.conv2d_nchwc import TILE_PREFETCH_ANNOTATION

    g = GraphBuilder(seed=21)
    x = g.input([1, 256, 14, 14])
    y = g.relu(g.conv(x, 256, 1024, kernel=1))
    z = g.conv(y, 1024, 1024, kernel=1)
    model = g.model(g.relu(g.node("Add", [z, y])))
    if preset == "x86-64-avx512":
        mod = scheduled_kernels(model, preset)
        convs = [gv for gv in mod.get_global_vars() if "conv2d" in gv.name_hint]
        assert len(convs) == 2 and all(re.search(TILE_PREFETCH_ANNOTATION, mod[conv].script()) for conv in convs)
    _check_prefetch_only_on_avx512(tmp_path, preset, model, (1, 256, 14, 14), seed=22)


def test_group_weight_prefetch_only_where_every_step_has_a_line_to_fetch():
    """The per-tile form's prefetch of the next channel group's weights is spread over the steps
    of the group's pixel chunks; where the group has fewer cache lines than steps, the extra
    steps re-issued the last line's prefetch (ResNeXt-50's 256 → 256 1×1 conv at 56×56: 512
    lines over 6,272 steps, 15–22% slower with it on Zen 4). On the AVX-512 preset that conv is
    scheduled without the annotation, while a 400 → 400 1×1 conv at 7×7 (one-tile chunks,
    several lines per step) keeps it."""
    import re

    from conftest import scheduled_kernels

    from slimtvm.schedules.conv2d_nchwc import TILE_PREFETCH_ANNOTATION

    def annotated(channels, size):
        g = GraphBuilder(seed=25)
        x = g.input([1, channels, size, size])
        model = g.model(g.relu(g.conv(x, channels, channels, kernel=1)))
        mod = scheduled_kernels(model, "x86-64-avx512")
        (conv,) = [gv for gv in mod.get_global_vars() if "conv2d" in gv.name_hint]
        return re.search(TILE_PREFETCH_ANNOTATION, mod[conv].script()) is not None

    assert annotated(400, 7)
    assert not annotated(256, 56)


def test_flattened_pixel_chunks_take_the_per_tile_form_even_with_megabytes_of_weights():
    """A conv with megabytes of weights (3×3/2, 256 → 512 channels at 7×7: 4.7 MB, 7-row chunks
    of several tiles) scheduled with the prefetch in chunks of 14 flattened pixels (the last one
    partial) runs them in the per-tile form, and the kernel matches onnxruntime on this host.
    (Before session 45's removal of the weight-chunk form, the prefetch was decided from the rows
    and the schedule had refused such chunks.)"""
    from tvm import s_tir

    from slimtvm.schedules.conv2d_nchwc import schedule_conv2d_nchwc
    from slimtvm.targets.presets import resolve_target
    from slimtvm.tuning.tune import extract_tuning_tasks

    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from conv_layers import conv_onnx, kernel_difference

    model = conv_onnx(256, 14, 3, 512, 2, 1)
    spec = resolve_target("host")
    (task,) = [t for t in extract_tuning_tasks(model, spec) if t.kind == "conv2d"]
    sch = s_tir.Schedule(task.mod)
    schedule_conv2d_nchwc(sch, oc_tile=2, px=7, rows=7, prefetch=True, chunk_pixels=14)
    assert kernel_difference(sch.mod, spec.tvm_target(), model, (1, 256, 14, 14)) <= 1e-4


def _check_prefetch_only_on_avx512(tmp_path, preset, model, shape, seed):
    """Compile ``model`` for ``preset``: its library prefetches into L2 (`prefetcht1`: weights
    more than an L1 ahead of their use) on the AVX-512 preset and not at all on the AVX2 one
    (where objdump is installed), and it matches onnxruntime where this host runs it. Returns
    the disassembly (None without objdump)."""
    import shutil
    import subprocess

    from conftest import x86_kernel_presets

    import slimtvm

    artifact = slimtvm.compile(model, str(tmp_path / "model.so"), target=preset)
    if shutil.which("objdump") is not None:
        disassembly = subprocess.run(["objdump", "-d", artifact.library_path], capture_output=True, text=True, check=True).stdout
        assert ("prefetcht1" in disassembly) == (preset != "x86-64")
        assert preset != "x86-64" or "prefetcht0" not in disassembly
    else:
        disassembly = None
    runnable = "host" if preset == "x86-64-avx512" else preset
    if runnable in x86_kernel_presets():
        inputs = {"x": digits_like_input(shape, seed=seed)}
        assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
    return disassembly


@pytest.mark.parametrize("stride,dilation,width", [(1, 1, 29), (2, 1, 29), (1, 2, 14)])
def test_depthwise_convs_read_their_padding_in_place_and_stay_exact(tmp_path, stride, dilation, width):
    """Depthwise convs read the zero padding as conditional loads, their column tiles split into
    edge and interior tiles (29 columns: three 8-pixel tiles and a short last one; 15 at stride 2:
    three 5-pixel tiles; 14 dilated: two 7-pixel edge tiles, no interior): they match
    onnxruntime, every border included, on every x86 kernel variant the host runs."""
    from conftest import x86_kernel_presets

    import slimtvm

    g = GraphBuilder(seed=23)
    x = g.input([1, 16, 15, width])
    y = g.relu(g.conv(x, 16, 32, kernel=1))
    pad = dilation
    y = g.conv(y, 32, 32, kernel=3, stride=stride, pads=(pad, pad, pad, pad), groups=32, dilation=dilation)
    model = g.model(g.relu(g.conv(y, 32, 16, kernel=1)))
    inputs = {"x": digits_like_input((1, 16, 15, width), seed=24)}
    expected = onnxruntime_outputs(model, inputs)
    for preset in x86_kernel_presets():
        artifact = slimtvm.compile(model, str(tmp_path / f"{preset}.so"), target=preset)
        assert_outputs_match(artifact.load().run(inputs), expected)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
def test_every_kernel_offers_enough_parallel_chunks_for_many_cores(name):
    """Read from the scheduled kernels for a 16-lane target (benchmarks/parallel_chunks.py): every
    kernel of the model (direct, Winograd and depthwise convs, the classifier, pooling, layout
    changes) runs in parallel, each parallel loop with at least 64 chunks, four per thread at 16
    threads (issue 16). Before: MobileNetV2's 7×7 and 14×14 1×1 convs 2–5 chunks (session 16),
    then 28–56; Winograd convs 14–56 (tile rows); the classifier 8 (split-K tasks); the global
    pool and the reshapes after it 32 (channel blocks)."""
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from architectures import ARCHITECTURES
    from parallel_chunks import parallel_extents

    kernels = parallel_extents(ARCHITECTURES[name](seed=0), "x86-64-avx512", with_output_shapes=True)
    short = {kernel: loops for kernel, (loops, _) in kernels.items() if not loops or min(loops) < 64}
    assert not short, f"kernels with fewer than 64 parallel chunks: {short}"
    families = {family for family in ("conv2d_NCHWc", "winograd", "depthwise", "matmul", "mean", "pool") if any(family in kernel for kernel in kernels)}
    assert families >= {"conv2d_NCHWc", "matmul", "mean"} and len(kernels) >= 20


def test_large_images_split_among_threads_by_rows_in_dense_convs_and_pools(tmp_path):
    """At 56×56 (ResNet-50's first stage in small: a 3×3/2 max-pool after a stem conv, a 1×1
    conv to 256 channels and one back to 64, with a residual add) every kernel runs bands of rows outermost in its
    parallel loop: the max-pool (rows outside the channel blocks) and both 1×1 convs (weights of
    64 KB against megabytes of activations, ``stages.spatial_partition`` without a size limit
    for dense convs), so each core reads back the rows it wrote. Until session 50 the convs ran
    channel groups outermost on images larger than 28×28 and the pool its channel blocks, and
    each core read every input row (ResNet-50's 256 → 64 convs at 2 threads on Emerald Rapids
    544–566 against 317–342 µs). A depthwise conv at that size keeps its channel blocks
    outermost. The loop order is read from the scheduled kernels for the AVX-512 target; the
    model matches onnxruntime on every x86 kernel variant the host runs."""
    from conftest import x86_kernel_presets

    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from parallel_chunks import parallel_extents

    import slimtvm

    g = GraphBuilder(seed=50)
    image = g.input([1, 16, 112, 112])
    stem = g.relu(g.conv(image, 16, 64, kernel=1))
    x = g.node("MaxPool", [stem], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    y = g.relu(g.conv(x, 64, 256, kernel=1))
    y = g.relu(g.node("Add", [g.conv(y, 256, 64, kernel=1), x]))
    y = g.relu(g.conv(y, 64, 64, kernel=3, pads=(1, 1, 1, 1), groups=64))
    model = g.model(g.conv(y, 64, 64, kernel=3, pads=(1, 1, 1, 1)))

    kernels = parallel_extents(model, "x86-64-avx512", with_loop_names=True)
    outermost = {}
    for kernel, loops in kernels.items():
        if not any(family in kernel for family in ("pool", "conv2d_NCHWc")) or "winograd" in kernel:
            continue  # layout transforms at the model's ends; the last 3×3 conv runs Winograd tiles
        for name, _ in loops:
            parts = name.split("_")
            pixels = next(i for i, part in enumerate(parts) if part in ("ax2", "y", "i2"))
            channels = next(i for i, part in enumerate(parts) if part in ("ax1", "c", "i1"))
            family = "depthwise" if "depthwise" in kernel else "pool" if "pool" in kernel else "conv"
            outermost.setdefault(family, set()).add("rows" if pixels < channels else "channels")
    assert outermost == {"pool": {"rows"}, "conv": {"rows"}, "depthwise": {"channels"}}, (outermost, kernels)

    inputs = {"x": digits_like_input((1, 16, 112, 112), seed=51)}
    expected = onnxruntime_outputs(model, inputs)
    for preset in x86_kernel_presets():
        artifact = slimtvm.compile(model, str(tmp_path / f"{preset}.so"), target=preset)
        assert_outputs_match(artifact.load().run(inputs), expected)


def test_depthwise_convs_on_few_channels_run_bands_of_rows_outermost(tmp_path):
    """A depthwise conv on at most 32 channels of a large image (MobileNetV2's first, after the
    stem) runs bands of rows outermost, then channel blocks, then the band's rows: the stem before
    it and the 1×1 conv after it cover those channels with one register tile, so they split the
    image among the threads, and each core now reads the rows it wrote (session 41: that layer
    ×1.79 → ×1.89 at 2 threads, its 1×1 successor ×1.90 → ×2.01, Emerald Rapids). On 64 channels
    the channel blocks stay outermost. The loop order is read from the scheduled kernels for the
    AVX-512 target; the model matches onnxruntime on every x86 kernel variant the host runs. (3×3
    convs read the depthwise convs here: a 1×1 conv after one would take it into the fused
    kernel, tests/test_depthwise_projection.py.)"""
    from conftest import x86_kernel_presets

    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from parallel_chunks import parallel_extents

    import slimtvm

    g = GraphBuilder(seed=41)
    image = g.input([1, 3, 64, 64])
    x = g.relu(g.conv(image, 3, 32, kernel=3, stride=2, pads=(1, 1, 1, 1)))
    x = g.relu(g.conv(x, 32, 32, kernel=3, pads=(1, 1, 1, 1), groups=32))
    x = g.relu(g.conv(x, 32, 64, kernel=3, pads=(1, 1, 1, 1)))
    model = g.model(g.conv(g.relu(g.conv(x, 64, 64, kernel=3, pads=(1, 1, 1, 1), groups=64)), 64, 16, kernel=3, pads=(1, 1, 1, 1)))

    kernels = parallel_extents(model, "x86-64-avx512", with_output_shapes=True, with_loop_names=True)
    orders = {shape[1] * shape[-1]: loops[0][0] for kernel, (loops, shape) in kernels.items() if "depthwise" in kernel}
    assert orders == {32: "b_y_0_c_y_1_0_fused", 64: "b_c_y_0_fused"}, orders  # bands (y_0), channel blocks (c), rows in the band

    inputs = {"x": digits_like_input((1, 3, 64, 64), seed=42)}
    expected = onnxruntime_outputs(model, inputs)
    for preset in x86_kernel_presets():
        artifact = slimtvm.compile(model, str(tmp_path / f"{preset}.so"), target=preset)
        assert_outputs_match(artifact.load().run(inputs), expected)


def test_small_images_split_among_threads_by_image_regions_where_weights_are_small(tmp_path):
    """At 14×14 an inverted residual block (1×1 expansion, depthwise, 1×1 projection: weights
    smaller than activations) runs its parallel loops image regions outermost, so that each core
    reads back the pixels it wrote, and so do the strided 3×3 conv before it and that conv's
    padding stage; at 7×7 with 1280 channels (weights larger than activations) channel groups
    stay outermost, each thread reading a share of the weights (``stages.spatial_partition``), and
    the 1280 → 64 projection sums its input channels in two halves first (the halves outermost,
    schedules/split_reduction_conv.py).
    The loop order is read from the scheduled kernels for the AVX-512 target (a fused loop is
    named after its loops, outermost first); the model matches onnxruntime on every x86 kernel
    variant the host runs."""
    from conftest import x86_kernel_presets

    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from parallel_chunks import parallel_extents

    import slimtvm

    g = GraphBuilder(seed=25)
    image = g.input([1, 32, 28, 28])
    x = g.relu(g.conv(image, 32, 64, kernel=3, stride=2, pads=(1, 1, 1, 1)))
    y = g.relu(g.conv(x, 64, 384, kernel=1))
    y = g.relu(g.conv(y, 384, 384, kernel=3, pads=(1, 1, 1, 1), groups=384))
    y = g.node("Add", [g.conv(y, 384, 64, kernel=1), x])
    y = g.relu(g.conv(y, 64, 1280, kernel=1, stride=2))
    y = g.relu(g.conv(y, 1280, 1280, kernel=3, pads=(1, 1, 1, 1), groups=1280))
    model = g.model(g.conv(y, 1280, 64, kernel=1))

    kernels = parallel_extents(model, "x86-64-avx512", with_output_shapes=True, with_loop_names=True)
    outermost, loops_per_kernel = {}, {}
    for kernel, (loops, shape) in kernels.items():
        if "conv2d" not in kernel:
            continue  # the layout transforms at the model's ends
        key = (shape[1] * shape[-1], shape[2])
        loops_per_kernel.setdefault(key, set()).add(len(loops))
        for name, _ in loops:  # the padding stage's loop too, where there is one
            if name.startswith("h_"):  # the split-reduction kernel's partial sums: halves of the input channels
                outermost.setdefault(key, set()).add("halves")
                continue
            parts = name.split("_")
            pixels = next(i for i, part in enumerate(parts) if part in ("ax2", "y", "i2"))
            channels = next(i for i, part in enumerate(parts) if part in ("ax1", "c", "i1"))
            outermost.setdefault(key, set()).add("regions" if pixels < channels else "channels")
    assert outermost == {
        (64, 14): {"regions"},  # the strided conv (74 KB of weights) and its padding; the projection
        (384, 14): {"regions"},  # expansion (98 KB of weights) and depthwise
        (1280, 7): {"channels"},  # 64 → 1280 (328 KB of weights) and the depthwise after it
        (64, 7): {"halves", "channels"},  # 1280 → 64: its input channels summed in two halves, then channel blocks
    }, outermost
    assert loops_per_kernel[(64, 14)] == {1, 2}, loops_per_kernel  # the strided conv pads in a stage of its own

    inputs = {"x": digits_like_input((1, 32, 28, 28), seed=26)}
    expected = onnxruntime_outputs(model, inputs)
    for preset in x86_kernel_presets():
        artifact = slimtvm.compile(model, str(tmp_path / f"{preset}.so"), target=preset)
        assert_outputs_match(artifact.load().run(inputs), expected)
