"""Binarized layers: detection is exact, and the bitserial kernels compute onnxruntime's outputs.

Inputs are random normals (no exact zeros: ONNX's Sign(0) is 0, slimtvm's is +1). Each test model
applies Sign directly to a graph input or to a value computed identically in both engines, so no
activation can sit within rounding distance of the Sign threshold here; deep models are covered
with an explicit check of the pre-Sign values (test_digits_bnn.py).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from binary_graphs import quantize_unit
from conftest import assert_outputs_match, onnxruntime_outputs
from onnx_builders import GraphBuilder

import slimtvm
from slimtvm.passes.detect_binary import two_valued_scale
from slimtvm.schedules.binary_weights import pack_weight_signs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def binary_weight(rng, shape, channel_axis=0, negative_channels=False):
    """±α_c per output channel, α_c > 0 (some channels all negative scale when asked)."""
    signs = rng.choice([-1.0, 1.0], size=shape)
    alpha_shape = [1] * len(shape)
    alpha_shape[channel_axis] = shape[channel_axis]
    alpha = rng.uniform(0.05, 0.5, size=alpha_shape)
    return (signs * alpha).astype(np.float32)


def sign_conv(g, x, cin, cout, kernel=3, stride=1, pads=(0, 0, 0, 0), dilation=1, groups=1):
    k = (kernel, kernel)
    weight = binary_weight(g.rng, (cout, cin // groups, *k))
    s = g.node("Sign", [x])
    return g.node("Conv", [s, g.const(weight)], kernel_shape=list(k), strides=[stride, stride], pads=list(pads), dilations=[dilation, dilation], group=groups)


def normal_input(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def compiled_report(artifact):
    return next(p for p in artifact.manifest["passes"] if p["name"] == "binarize")


def lowered_binary_convs(artifact) -> int:
    """Convs the lowering actually turned into binary kernels (not merely detected)."""
    return next(p for p in artifact.manifest["passes"] if p["name"] == "binary_blocks")["binary_convs_lowered"]


def check_binary_model(compile_and_run, model, inputs, binary_convs):
    """Compile and run ``model``: ``binary_convs`` convs detected and lowered to binary kernels,
    onnxruntime's outputs."""
    outputs, artifact = compile_and_run(model, inputs)
    assert compiled_report(artifact)["binary_convs"] == binary_convs == lowered_binary_convs(artifact)
    assert_outputs_match(outputs, onnxruntime_outputs(model, inputs))
    return artifact


@pytest.mark.parametrize(
    "cin,cout,kernel,stride,pads,dilation,groups,size",
    [
        (16, 8, 3, 1, (1, 1, 1, 1), 1, 1, 9),  # padded: border taps contribute 0
        (40, 16, 3, 2, (1, 0, 2, 1), 1, 1, 11),  # strided, asymmetric padding, 40 = 32 + 8 channels
        (64, 32, 1, 1, (0, 0, 0, 0), 1, 1, 7),  # 1x1, two full words
        (8, 8, 3, 1, (2, 2, 2, 2), 2, 1, 8),  # dilated
        (32, 32, 3, 1, (1, 1, 1, 1), 1, 4, 6),  # grouped: 8 channels per group
        (3, 16, 5, 2, (2, 2, 2, 2), 1, 1, 13),  # 3 channels: one partly filled word
        (64, 16, 3, 1, (1, 1, 1, 1), 1, 1, 16),  # 8x8 register transposes: sign bytes in, 8-pixel dot rows out
        (128, 24, 3, 2, (1, 1, 1, 1), 1, 1, 24),  # two byte tiles per pixel in, 4-pixel dot rows out
        (72, 12, 3, 1, (1, 1, 1, 1), 1, 1, 8),  # 9 bytes, 12 channels: no transpose tile fits
    ],
)
def test_binary_conv_matches_onnxruntime(compile_and_run, cin, cout, kernel, stride, pads, dilation, groups, size):
    g = GraphBuilder(seed=cin + cout + kernel)
    x = g.input([1, cin, size, size])
    model = g.model(sign_conv(g, x, cin, cout, kernel, stride, pads, dilation, groups))
    check_binary_model(compile_and_run, model, {"x": normal_input((1, cin, size, size), seed=size)}, binary_convs=1)


def test_binary_dense_matches_onnxruntime(compile_and_run):
    g = GraphBuilder(seed=7)
    x = g.input([2, 100])
    weight = binary_weight(g.rng, (100, 24), channel_axis=1)  # MatMul weight [K, N]
    model = g.model(g.node("MatMul", [g.node("Sign", [x]), g.const(weight)]))
    inputs = {"x": normal_input((2, 100), seed=8)}
    outputs, artifact = compile_and_run(model, inputs)
    assert compiled_report(artifact)["binary_dense"] == 1
    assert_outputs_match(outputs, onnxruntime_outputs(model, inputs))


def test_batch_norm_with_negative_scales_after_a_binary_conv_stays_binary(compile_and_run):
    """Conv→BN folds into the weights (×s_c, some s_c < 0): still ±β per channel, still binary."""
    g = GraphBuilder(seed=9)
    x = g.input([1, 16, 8, 8])
    y = g.batchnorm(sign_conv(g, x, 16, 16, pads=(1, 1, 1, 1)), 16, negative_scales=True)
    check_binary_model(compile_and_run, g.model(g.relu(y)), {"x": normal_input((1, 16, 8, 8), seed=10)}, binary_convs=1)


def test_weights_binarized_in_the_graph_are_recognised(compile_and_run):
    """The export pattern α = mean|W| (ReduceMean of Abs), Sign(W)·α, computed at run time."""
    g = GraphBuilder(seed=11)
    x = g.input([1, 8, 6, 6])
    float_weight = g.const(g.rng.standard_normal((16, 8, 3, 3)).astype(np.float32))
    alpha = g.node("ReduceMean", [g.node("Abs", [float_weight])], axes=[1, 2, 3], keepdims=1)
    weight = g.node("Mul", [alpha, g.node("Sign", [float_weight])])
    model = g.model(g.node("Conv", [g.node("Sign", [x]), weight], kernel_shape=[3, 3], pads=[1, 1, 1, 1]))
    check_binary_model(compile_and_run, model, {"x": normal_input((1, 8, 6, 6), seed=12)}, binary_convs=1)


def test_sign_fed_conv_with_general_weights_stays_float_and_says_why(compile_and_run):
    g = GraphBuilder(seed=13)
    x = g.input([1, 8, 6, 6])
    model = g.model(g.node("Conv", [g.node("Sign", [x]), g.const(g.rng.standard_normal((8, 8, 3, 3)).astype(np.float32))], kernel_shape=[3, 3]))
    artifact = check_binary_model(compile_and_run, model, {"x": normal_input((1, 8, 6, 6), seed=14)}, binary_convs=0)
    assert compiled_report(artifact)["stayed_float_because"] == {"weights take more than two values (±α) per output channel": 1}


def test_two_valued_scale_and_packing():
    weight = np.array([[0.5, -0.5, 0.5], [-0.25, -0.25, 0.25]], dtype=np.float32)
    alpha, reason = two_valued_scale(weight, 0)
    assert reason is None and alpha.tolist() == [0.5, 0.25]
    assert two_valued_scale(np.array([[0.5, 0.4]], dtype=np.float32), 0) == (None, "weights take more than two values (±α) per output channel")
    packed = pack_weight_signs(np.concatenate([weight, -np.ones((2, 32), np.float32)], axis=1))
    assert packed.shape == (2, 2)
    assert packed[:, 0].tolist() == [0b101, 0b100]  # channels 0..31 in word 0, bit b = channel b > 0
    assert packed[:, 1].tolist() == [0, 0]  # channels 32..34 all negative, unused bits 0


def test_inspect_names_each_binary_and_float_layer(tmp_path, capsys):
    """`slimtvm inspect` says, per Sign-fed layer, binary or float and why (graph order)."""
    import onnx

    from slimtvm.cli import main

    g = GraphBuilder(seed=15)
    x = g.input([1, 8, 6, 6])
    y = sign_conv(g, x, 8, 16, pads=(1, 1, 1, 1))
    y = g.node("Conv", [g.node("Sign", [y]), g.const(g.rng.standard_normal((8, 16, 3, 3)).astype(np.float32))], kernel_shape=[3, 3])
    path = str(tmp_path / "mixed.onnx")
    onnx.save(g.model(y), path)
    assert main(["inspect", path]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.split()[2:3] == ["Conv"]]
    assert len(lines) == 2
    assert "binary (XNOR + popcount" in lines[0]
    assert "stays float: weights take more than two values" in lines[1]


@pytest.mark.parametrize("form", ["where_less", "where_greater_equal", "ste_sign"])
def test_zero_preserving_binarizers_are_exact_on_exact_zeros(compile_and_run, form):
    """where(x < 0, −1, 1), where(x ≥ 0, 1, −1) and Larq's sign(sign(x) + 0.1) map 0 to +1 like
    slimtvm, so after a ReLU (many exact zeros) the binary conv still matches onnxruntime."""
    g = GraphBuilder(seed=16)
    x = g.input([1, 24, 7, 7])
    r = g.relu(x)
    if form == "where_less":
        s = g.node("Where", [g.node("Less", [r, g.const(np.float32(0.0), "z")]), g.const(np.float32(-1.0), "m"), g.const(np.float32(1.0), "p")])
    elif form == "where_greater_equal":
        s = g.node("Where", [g.node("GreaterOrEqual", [r, g.const(np.float32(0.0), "z")]), g.const(np.float32(1.0), "p"), g.const(np.float32(-1.0), "m")])
    else:
        s = g.node("Sign", [g.node("Add", [g.node("Sign", [r]), g.const(np.float32(0.1), "c")])])
    y = g.node("Conv", [s, g.const(binary_weight(g.rng, (16, 24, 3, 3)))], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    check_binary_model(compile_and_run, g.model(y), {"x": normal_input((1, 24, 7, 7), seed=17)}, binary_convs=1)


@pytest.mark.parametrize("bits,stride,pads", [(2, 1, (1, 1, 1, 1)), (2, 2, (1, 0, 2, 1)), (3, 1, (0, 0, 0, 0))])
def test_k_bit_activations_use_the_unipolar_kernel(compile_and_run, bits, stride, pads):
    """2- and 3-bit unipolar activations × binary weights (AND form, per bit plane) match
    onnxruntime, zero padding included (a padded q is 0)."""
    g = GraphBuilder(seed=18 + bits)
    x = g.input([1, 20, 9, 9])
    y = g.node(
        "Conv", [quantize_unit(g, x, bits), g.const(binary_weight(g.rng, (40, 20, 3, 3)))], kernel_shape=[3, 3], strides=[stride, stride], pads=list(pads)
    )
    model = g.model(g.batchnorm(y, 40, negative_scales=True))
    inputs = {"x": np.random.default_rng(19).uniform(-0.5, 1.5, (1, 20, 9, 9)).astype(np.float32)}
    artifact = check_binary_model(compile_and_run, model, inputs, binary_convs=1)
    assert next(p for p in artifact.manifest["passes"] if p["name"] == "binary_blocks")["k_bit_activation_convs"] == 1


@pytest.mark.parametrize(
    "target,objdump,instruction",
    [
        ("x86-64", "objdump", "vpshufb"),  # AVX2: nibble-lookup popcount
        ("x86-64-avx512-vpopcnt", "objdump", "vpopcntb"),  # AVX-512 BITALG: one instruction
        ("aarch64", "aarch64-linux-gnu-objdump", "cnt\tv"),  # NEON: cnt on 16 bytes
    ],
)
def test_binary_kernels_use_the_targets_popcount_instruction(tmp_path, target, objdump, instruction):
    """The same schedule lowers to each target's vector popcount (compiled, not run: this machine
    has no AVX-512; aarch64 runs are in test_aarch64.py)."""
    import shutil
    import subprocess

    if shutil.which(objdump) is None:
        pytest.skip(f"{objdump} is not installed (scripts/setup_arm_emulation.sh installs the aarch64 one)")
    artifact = slimtvm.compile(os.path.join(REPO, "examples", "digits_bnn.onnx"), str(tmp_path / "bnn.so"), target=target)
    listing = subprocess.run([objdump, "-d", artifact.library_path], capture_output=True, text=True, check=True).stdout
    assert listing.count(instruction) >= 8


def test_max_pool_after_the_sign_is_moved_before_it(compile_and_run):
    """Conv → BN → Sign → MaxPool → binary Conv: the pool commutes with Sign, so the second conv is
    binary (its input is sign(max_pool(x))) and matches onnxruntime."""
    g = GraphBuilder(seed=21)
    x = g.input([1, 16, 8, 8])
    y = g.batchnorm(sign_conv(g, x, 16, 32, pads=(1, 1, 1, 1)), 32, negative_scales=True)
    pooled = g.node("MaxPool", [g.node("Sign", [y])], kernel_shape=[2, 2], strides=[2, 2])
    z = g.node("Conv", [pooled, g.const(binary_weight(g.rng, (16, 32, 3, 3)))], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    check_binary_model(compile_and_run, g.model(z), {"x": normal_input((1, 16, 8, 8), seed=22)}, binary_convs=2)


@pytest.mark.parametrize("producer", ["Relu", "Clip", "MaxPool of Relu", "Round"])
def test_sign_of_an_input_that_can_be_exactly_zero_stays_float_and_exact(producer, tmp_path):
    """ONNX Sign(0) = 0, which no binary kernel computes: after a Relu (or Clip at 0, a pool of
    those, a rounding) zeros are everywhere, and binarizing gave a 0.92 relative error. The layer
    stays float, the report says why, and the output is onnxruntime's."""
    g = GraphBuilder(seed=1)
    x = g.input([1, 8, 6, 6])
    if producer == "Relu":
        y = g.relu(x)
    elif producer == "Clip":
        y = g.node("Clip", [x, g.const(np.float32(0.0), "lo"), g.const(np.float32(6.0), "hi")])
    elif producer == "MaxPool of Relu":
        y = g.node("MaxPool", [g.relu(x)], kernel_shape=[2, 2], strides=[1, 1])
    else:
        y = g.node("Round", [x])
    model = g.model(sign_conv(g, y, 8, 16, pads=(1, 1, 1, 1)))
    artifact = slimtvm.compile(model, str(tmp_path / "model.so"))
    report = compiled_report(artifact)
    assert report["binary_convs"] == 0
    (reason,) = report["stayed_float_because"]
    assert reason.startswith("ONNX Sign(0) is 0") and "can be exactly 0" in reason
    inputs = {"x": normal_input((1, 8, 6, 6), seed=2)}
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))


@pytest.mark.parametrize("preset", ["x86-64-avx512", "x86-64-avx512-vpopcnt"])
def test_binary_convs_at_7x7_run_in_row_and_channel_chunks_and_stay_exact(tmp_path, preset):
    """ResNet-18's last binary stage (512 channels, 7×7 output), read from the scheduled kernel
    (benchmarks/parallel_chunks.py): the input packing, within the copy into the zero border (one
    parallel loop, two before session 30), runs over pixels (× halves of a pixel's bytes), at least
    64 parallel chunks for 16 threads (7 and 9 rows before); the popcounts over output rows × groups of output channels × pixel tiles, 56 chunks
    (7 when only rows were parallel, which two threads split 4 + 3; 28 with rows × groups; see
    schedules/binary_conv_schedule.py for why not 64). The host build matches onnxruntime."""
    import sys

    from binary_graphs import ConvSpec, conv_graph, sign_margin_ok

    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from parallel_chunks import parallel_extents

    spec = ConvSpec(
        cin=512, cout=512, kernel=3, stride=1, dilation=1, pads=(1, 1, 1, 1), groups=1, size=7, batchnorm=True, maxpool=False, second=0, residual=True, seed=5
    )
    model, inputs, probe = conv_graph(spec)
    assert sign_margin_ok(probe, inputs, onnxruntime_outputs)
    binary = {name: loops for name, loops in parallel_extents(model, preset).items() if "binary_conv2d" in name}
    assert len(binary) == 1
    (loops,) = binary.values()
    assert len(loops) == 2 and loops[0] >= 64 and loops[1] >= 56, loops
    if preset != "x86-64-avx512":
        return  # the host build below is checked once
    artifact = slimtvm.compile(model, str(tmp_path / "model.so"))
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
