"""The Winograd F(2×2, 3×3) and F(4×4, 3×3) kernels: which convs take them, and that they match onnxruntime."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import assert_outputs_match, onnxruntime_outputs, x86_kernel_presets
from onnx_builders import GraphBuilder, digits_like_input

import slimtvm
from slimtvm.cli import main
from slimtvm.compiler.layer_table import recorded_decisions
from slimtvm.frontend.onnx_import import import_onnx
from slimtvm.schedules.winograd_conv import band_columns, default_winograd_tile, winograd_weights
from slimtvm.targets.presets import resolve_target

WINOGRAD = "fp32 Winograd F(2×2, 3×3) conv, NCHW16c kernel (2.25× fewer multiply-adds)"
WINOGRAD_4 = "fp32 Winograd F(4×4, 3×3) conv, NCHW16c kernel (4.00× fewer multiply-adds)"
DIRECT = "fp32 conv, blocked NCHW16c kernel"


def _residual_model(batch: int, channels: int, height: int, width: int, seed: int):
    """3×3 stride-1 convs (one with a residual add and ReLU after it, one with 48 outputs: three
    16-channel blocks), a strided one, and a 1×1 one."""
    g = GraphBuilder(seed=seed)
    x = g.input([batch, channels, height, width])
    y = g.relu(g.conv(x, channels, channels, kernel=3, pads=(1, 1, 1, 1)))
    y = g.relu(g.node("Add", [g.conv(y, channels, channels, kernel=3, pads=(1, 1, 1, 1)), x]))
    y = g.relu(g.conv(y, channels, 48, kernel=3, pads=(1, 1, 1, 1)))
    y = g.relu(g.conv(y, 48, 32, kernel=3, stride=2, pads=(1, 1, 1, 1)))
    return g.model(g.conv(y, 32, 16, kernel=1))


def test_x86_builds_take_winograd_for_3x3_stride_1_convs_of_seven_by_seven_and_more():
    """On 16-lane (AVX-512) and 8-lane (AVX2) targets: 3×3 stride-1 convs with ≥ 49 output pixels
    take the Winograd kernel in their channel block, strided, 1×1 and 6×6-image convs the direct
    one; the aarch64 build (4 lanes) keeps the direct kernel."""
    model = _residual_model(1, 32, 12, 10, seed=31)
    _, decisions = recorded_decisions(import_onnx(model), resolve_target("x86-64-avx512").tvm_target())
    assert decisions.convs == [WINOGRAD, WINOGRAD, WINOGRAD, DIRECT, DIRECT]
    small = _residual_model(1, 32, 6, 6, seed=31)
    _, decisions = recorded_decisions(import_onnx(small), resolve_target("x86-64-avx512").tvm_target())
    assert WINOGRAD not in decisions.convs
    _, decisions = recorded_decisions(import_onnx(model), resolve_target("x86-64").tvm_target())
    assert decisions.convs[:3] == [WINOGRAD.replace("NCHW16c", "NCHW8c")] * 3 and "Winograd" not in decisions.convs[3]
    _, decisions = recorded_decisions(import_onnx(model), resolve_target("aarch64").tvm_target())
    assert all("Winograd" not in plan for plan in decisions.convs)


def test_conv_algorithm_direct_keeps_every_conv_on_the_direct_kernel(tmp_path, capsys):
    """``conv_algorithm="direct"`` (``--conv-algorithm direct``): the convs Winograd would take run
    the direct kernel, the manifest says so, the result matches onnxruntime; an unknown value is
    refused before any work."""
    model = _residual_model(1, 32, 12, 10, seed=31)
    artifact = slimtvm.compile(model, str(tmp_path / "direct.so"), target="x86-64", conv_algorithm="direct")
    assert artifact.manifest["conv_algorithm"] == "direct"
    kernels = next(p for p in artifact.manifest["passes"] if p["name"] == "kernels")
    assert "winograd_conv2d" not in kernels["by_family"]
    assert [layer["plan"] for layer in artifact.manifest["layers"] if layer["op"] == "conv2d"] == [DIRECT.replace("NCHW16c", "NCHW8c")] * 5
    inputs = {"x": digits_like_input((1, 32, 12, 10), seed=33)}
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
    with pytest.raises(slimtvm.SlimError, match="conv algorithm 'fast': use one of auto, direct"):
        slimtvm.compile(model, str(tmp_path / "bad.so"), conv_algorithm="fast")
    assert not (tmp_path / "bad.so").exists()
    onnx.save(model, tmp_path / "model.onnx")
    assert main(["compile", str(tmp_path / "model.onnx"), "-o", str(tmp_path / "cli.so"), "--target", "x86-64", "--conv-algorithm", "direct"]) == 0
    printed = capsys.readouterr().out
    assert "winograd" not in printed and "conv2d 5" in printed
    assert main(["inspect", str(tmp_path / "model.onnx"), "--target", "x86-64", "--conv-algorithm", "direct"]) == 0
    printed = capsys.readouterr().out
    assert "Winograd" not in printed and printed.count("fp32 conv, blocked NCHW8c kernel") == 5


def test_images_of_five_by_five_four_pixel_tiles_take_f4x4():
    """17×17 images (5 × 5 tiles of 4 × 4, the last one partial) take F(4×4, 3×3); 16×16 ones
    (4 × 4 tiles) keep F(2×2, 3×3)."""
    target = resolve_target("x86-64-avx512").tvm_target()
    _, decisions = recorded_decisions(import_onnx(_residual_model(1, 32, 17, 17, seed=31)), target)
    assert decisions.convs == [WINOGRAD_4, WINOGRAD_4, WINOGRAD_4, DIRECT, DIRECT]
    _, decisions = recorded_decisions(import_onnx(_residual_model(1, 32, 16, 16, seed=31)), target)
    assert decisions.convs == [WINOGRAD, WINOGRAD, WINOGRAD, DIRECT, DIRECT]


@pytest.mark.parametrize("preset", x86_kernel_presets())
@pytest.mark.parametrize("batch,height,width", [(1, 12, 10), (2, 15, 13), (1, 28, 28), (1, 7, 7), (2, 19, 21)])
def test_winograd_convs_match_onnxruntime(tmp_path, preset, batch, height, width):
    """Odd image sizes (a partial last tile), two images, and fused residual adds and ReLUs;
    F(2×2) up to 15×13, F(4×4) at 28×28 (whole tiles) and 19×21 (5 × 6 tiles, the last row and
    column partial); every x86 build this host runs (AVX2's 8-lane blocks, and AVX-512's)."""
    model = _residual_model(batch, 32, height, width, seed=32 + height)
    artifact = slimtvm.compile(model, str(tmp_path / "model.so"), target=preset)
    kernels = next(p for p in artifact.manifest["passes"] if p["name"] == "kernels")
    assert kernels["by_family"].get("winograd_conv2d", 0) >= 1
    inputs = {"x": digits_like_input((batch, 32, height, width), seed=33)}
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))


def test_weight_transform_is_g_g_gt_per_position():
    """U[ξ, ν] = G g Gᵀ for each filter, in the [ξ, ν, out block, in block, in lane, out lane] layout."""
    rng = np.random.default_rng(5)
    weight = rng.standard_normal((32, 16, 3, 3)).astype(np.float32)
    u = winograd_weights(weight, 16)
    g = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
    o, i = 17, 5
    expected = g @ weight[o, i].astype(np.float64) @ g.T
    assert np.allclose(u[:, :, o // 16, i // 16, i % 16, o % 16], expected, rtol=1e-6)
    with pytest.raises(ValueError, match="3×3"):
        winograd_weights(rng.standard_normal((16, 16, 5, 5)).astype(np.float32), 16)


def test_f4x4_transforms_compute_the_correlation_exactly_in_float64():
    """Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A equals the r × r correlation of an (m + r − 1)² window for every
    transform (F(2×2, 3×3), F(4×4, 3×3), F(4×4, 4×4); float64, numpy's direct sum as the
    reference), and the weight transform lays U out per position as for F(2×2)."""
    from slimtvm.schedules.winograd_conv import TRANSFORMS

    rng = np.random.default_rng(6)
    assert set(TRANSFORMS) == {(2, 3), (4, 3), (4, 4)}
    for (m, r), transform in TRANSFORMS.items():
        assert (transform.tile, transform.kernel, transform.window) == (m, r, m + r - 1)
        bt, g, at = (np.array(a, dtype=np.float64) for a in (transform.input_t, transform.weight, transform.output_t))
        d, k = rng.standard_normal((m + r - 1, m + r - 1)), rng.standard_normal((r, r))
        expected = np.array([[np.sum(d[y : y + r, x : x + r] * k) for x in range(m)] for y in range(m)])
        assert np.allclose(at @ ((g @ k @ g.T) * (bt @ d @ bt.T)) @ at.T, expected, rtol=1e-12, atol=1e-12)
    weight = rng.standard_normal((16, 32, 3, 3)).astype(np.float32)
    u = winograd_weights(weight, 16, tile=4)
    assert u.shape == (6, 6, 1, 2, 16, 16)
    g = np.array(TRANSFORMS[(4, 3)].weight)
    assert np.allclose(u[:, :, 0, 1, 3, 9], g @ weight[9, 19].astype(np.float64) @ g.T, rtol=1e-6)


@pytest.mark.parametrize("tiles,blocks,expected", [(784, 4, (14, 2)), (196, 8, (14, 2)), (49, 16, (7, 2)), (40, 3, (20, 1)), (2, 4, (2, 4))])
def test_default_tile_divides_the_tiles_within_the_registers(tiles, blocks, expected):
    """(2, 4): a banded task of two tiles takes four output blocks, 8 accumulators, not 4."""
    tile = default_winograd_tile(tiles, blocks)
    assert (tile.px, tile.oc_tile) == expected
    assert tile.px * tile.oc_tile <= 28


@pytest.mark.parametrize("bands,cols,expected", [(14, 14, 2), (1, 14, 2), (56, 14, 7), (8, 7, 7), (28, 28, 7)])
def test_banded_tasks_are_parts_of_a_tile_row_that_give_64_tasks(bands, cols, expected):
    """ResNet-18's 56×56 layers (14 tile rows of 14 tiles) in tasks of 2 tiles (98, not 14); at
    batch 4 (56 bands) 7 tiles suffice; a prime row (7) stays whole."""
    assert band_columns(bands, cols) == expected


@pytest.mark.parametrize("channels,size,instruction", [(256, 14, "prefetcht0"), (512, 7, "prefetcht1")])
def test_winograd_product_prefetches_the_next_tasks_weights_and_stays_exact(tmp_path, channels, size, instruction):
    """256 channels at 14×14 (4.2 MB of transformed weights, too many for the banded form): the
    product prefetches the next task's slice of the weights (32 KB, into L1: `prefetcht0`); ResNet's
    512 channels at 7×7 (16.7 MB) prefetch a 64 KB slice, more than an L1, into L2 only
    (`prefetcht1`; into L1 it ran 25–30% slower in ResNet-18 on Zen 4). The library has no conv
    but this one, and the output matches onnxruntime where this host runs AVX-512."""
    import shutil
    import subprocess

    g = GraphBuilder(seed=41)
    x = g.input([1, channels, size, size])
    model = g.model(g.relu(g.conv(x, channels, channels, kernel=3, pads=(1, 1, 1, 1))))
    artifact = slimtvm.compile(model, str(tmp_path / "model.so"), target="x86-64-avx512")
    kernels = next(p for p in artifact.manifest["passes"] if p["name"] == "kernels")
    assert kernels["by_family"] == {"winograd_conv2d": 1}
    if shutil.which("objdump") is not None:
        disassembly = subprocess.run(["objdump", "-d", artifact.library_path], capture_output=True, text=True, check=True).stdout
        assert {name for name in ("prefetcht0", "prefetcht1") if name in disassembly} == {instruction}
    if "host" not in x86_kernel_presets():
        return
    inputs = {"x": digits_like_input((1, channels, size, size), seed=42)}
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))


STEM = "fp32 Winograd F(4×4, 4×4) conv of the 4 input phases of a stride-2 7×7 conv, NCHW16c output (4.00× fewer multiply-adds)"


def _stem_model(channels: int, size: int, kernel: int, pad: int, out_channels: int, seed: int):
    """A stride-2 stem conv with a ReLU after it, then a 3×3 conv (so its output stays blocked)."""
    g = GraphBuilder(seed=seed)
    x = g.input([1, channels, size, size])
    y = g.relu(g.conv(x, channels, out_channels, kernel=kernel, stride=2, pads=(pad,) * 4))
    return g.model(g.conv(y, out_channels, 16, kernel=3, pads=(1, 1, 1, 1)))


def test_stride_2_stems_on_few_channels_take_winograd_on_their_input_phases():
    """ResNet's 7×7 stride-2 stem on 3 channels runs F(4×4, 4×4) on its 4 input phases (x86
    builds); 5 input channels (more than a 4-channel image) and aarch64 builds keep the direct kernel."""
    avx512 = resolve_target("x86-64-avx512").tvm_target()
    _, decisions = recorded_decisions(import_onnx(_stem_model(3, 64, 7, 3, 64, seed=40)), avx512)
    assert decisions.convs[0] == STEM
    _, decisions = recorded_decisions(import_onnx(_stem_model(5, 64, 7, 3, 64, seed=40)), avx512)
    assert "Winograd" not in decisions.convs[0]
    _, decisions = recorded_decisions(import_onnx(_stem_model(3, 64, 7, 3, 64, seed=40)), resolve_target("x86-64").tvm_target())
    assert decisions.convs[0] == STEM.replace("NCHW16c", "NCHW8c")  # 12 phases across two 8-lane blocks
    _, decisions = recorded_decisions(import_onnx(_stem_model(3, 64, 7, 3, 64, seed=40)), resolve_target("aarch64").tvm_target())
    assert all("Winograd" not in plan for plan in decisions.convs)


@pytest.mark.parametrize(
    "channels,size,kernel,pad,out_channels",
    [(3, 64, 7, 3, 64), (3, 37, 7, 3, 32), (3, 40, 6, 2, 32), (1, 30, 5, 2, 16), (4, 33, 7, 3, 16), (2, 31, 8, 3, 16)],
)
@pytest.mark.parametrize("preset", x86_kernel_presets())
def test_winograd_stems_match_onnxruntime(tmp_path, preset, channels, size, kernel, pad, out_channels):
    """7×7 (F(4×4, 4×4)), 6×6 and 5×5 (F(m×m, 3×3)) and 8×8 stride-2 stems on 1–4 channels, odd
    image sizes (partial tiles, phases reading past the image), against onnxruntime; on AVX2 the
    phases of more than 2 channels take two 8-channel blocks."""
    model = _stem_model(channels, size, kernel, pad, out_channels, seed=41 + size)
    artifact = slimtvm.compile(model, str(tmp_path / "model.so"), target=preset)
    plans = [layer["plan"] for layer in artifact.manifest["layers"] if layer.get("op") == "conv2d"]
    assert "input phases of a stride-2" in plans[0], plans
    inputs = {"x": digits_like_input((1, channels, size, size), seed=42)}
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))


def test_phase_weights_put_each_phase_of_the_kernel_in_its_lanes():
    """w[o, (2a + b) · C + c, u, v] = weight[o, c, 2u + a, 2v + b], zero past the kernel and in
    the channels past 4 · C, in whole blocks."""
    from slimtvm.schedules.winograd_conv import phase_weights

    rng = np.random.default_rng(7)
    weight = rng.standard_normal((16, 3, 7, 7)).astype(np.float32)
    phased = phase_weights(weight, 16)
    assert phased.shape == (16, 16, 4, 4)
    for a in range(2):
        for b in range(2):
            for c in range(3):
                for u in range(4):
                    for v in range(4):
                        inside = 2 * u + a < 7 and 2 * v + b < 7
                        expected = weight[5, c, 2 * u + a, 2 * v + b] if inside else 0.0
                        assert phased[5, (2 * a + b) * 3 + c, u, v] == expected
    assert not phased[:, 12:].any()
    wider = phase_weights(rng.standard_normal((16, 3, 7, 7)).astype(np.float32), 8)  # AVX2: two blocks of 8
    assert wider.shape == (16, 16, 4, 4) and not wider[:, 12:].any()


def test_stage_wise_transforms_split_the_image_among_threads_by_rows(tmp_path):
    """A 3×3 conv of 128 channels at 28 × 28 (ResNet's second stage: transformed weights too
    large for the banded form) between two 1×1 convs, with a residual add: its input transform
    runs groups of tiles outside the channel blocks and its output transform tile rows outside
    the output blocks, as the 1×1 convs around it run rows outside channel groups, so each core
    reads and writes the same band of rows (channel blocks were outermost until session 50). Read
    from the scheduled kernels (a fused loop is named after its loops, outermost first) for both
    x86 targets; the model matches onnxruntime on every x86 build the host runs."""
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
    from parallel_chunks import parallel_extents

    g = GraphBuilder(seed=52)
    x = g.input([1, 64, 28, 28])
    y = g.relu(g.conv(x, 64, 128, kernel=1))
    y = g.relu(g.node("Add", [g.conv(y, 128, 128, kernel=3, pads=(1, 1, 1, 1)), y]))
    model = g.model(g.conv(y, 128, 64, kernel=1))
    for preset in ("x86-64-avx512", "x86-64"):
        kernels = parallel_extents(model, preset, with_loop_names=True)
        (loops,) = [loops for name, loops in kernels.items() if "winograd" in name]
        names = [name.split("_") for name, _ in loops]
        assert len(names) == 3, loops  # input transform, product, output transform: stage by stage
        transform_in, _, transform_out = names
        assert transform_in.index("tile") < transform_in.index("block"), loops
        assert transform_out.index("i2") < transform_out.index("i1"), loops
    inputs = {"x": digits_like_input((1, 64, 28, 28), seed=53)}
    expected = onnxruntime_outputs(model, inputs)
    for preset in x86_kernel_presets():
        artifact = slimtvm.compile(model, str(tmp_path / f"{preset}.so"), target=preset)
        assert_outputs_match(artifact.load().run(inputs), expected)
