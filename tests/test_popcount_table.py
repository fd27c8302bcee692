"""The packed binary conv's popcount forms — the AVX2 table popcount (weight nibbles) and the
byte popcount (weight bytes) — compute the dot products numpy computes from the same bits, on
the AVX2 build (every x86 host) and the host's own build; and the targets that get tables are
the ones meant to."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from conftest import x86_kernel_presets
from tvm import s_tir, te

from slimtvm.conv_geometry import ConvGeometry
from slimtvm.schedules import binary_conv_compute as packed_conv
from slimtvm.schedules.binary_conv_schedule import BinaryConv
from slimtvm.schedules.binary_weights import pack_conv_weight_bytes, padding_corrections, split_weight_nibbles
from slimtvm.targets.presets import popcount_by_table, resolve_target


def _conv(
    weights: np.ndarray, tap_sums: np.ndarray, activations: np.ndarray, channels: int, out_channels: int, levels: int, stride: int, preset: str
) -> np.ndarray:
    """The packed binary conv (α = 1, so its float output holds the integer dot products) for
    these weights, bytes or nibbles, built with slimtvm's default schedule and run here."""
    size = activations.shape[1] - 2
    weight = te.placeholder(weights.shape, "uint8", name="weights")
    corrections = padding_corrections(tap_sums, ConvGeometry.of(size, size, 3, 3, (stride, stride), (1, 1, 1, 1)))
    taps = te.placeholder(corrections.shape, str(corrections.dtype), name="corrections")
    alpha = te.placeholder((out_channels,), "float32", name="alpha")
    source = te.placeholder(activations.shape, "uint8", name="packed")
    out = packed_conv.binary_conv2d_packed(source, weight, alpha, taps, channels, (size, size), (stride, stride), (1, 1, 1, 1), (1, 1), levels=levels)
    scheduled = BinaryConv(8).schedule(s_tir.Schedule(te.create_prim_func([source, weight, alpha, taps, out])))
    library = tvm.tirx.build(scheduled.mod, target=resolve_target(preset).tvm_target())
    arrays = [tvm.runtime.tensor(a) for a in (activations, weights, np.ones(out_channels, np.float32), corrections)]
    result = tvm.runtime.tensor(np.zeros([int(d) for d in out.shape], "float32"))
    library["main"](*arrays, result)
    return result.numpy()


def _numpy_dots(weight: np.ndarray, activations: np.ndarray, channels: int, levels: int, stride: int) -> np.ndarray:
    """The reference: unpack the activation bytes (plane-major, bit b of byte k = channel 8k + b)
    to values — ±1 sign bits, or unipolar q = Σ 2^p·bit_p — with the one-pixel border as the
    conv's zero padding, and correlate with the ±1 weights. ``[1, O, out_h, out_w]``."""
    planes = int(levels).bit_length()
    channel_bytes = activations.shape[3] // planes
    bits = np.unpackbits(activations[0].reshape(*activations.shape[1:3], planes, channel_bytes), axis=3, bitorder="little")[..., :channels].astype(np.int64)
    values = (2 * bits[:, :, 0] - 1) if levels == 1 else sum(bits[:, :, p] << p for p in range(planes))
    values[[0, -1], :, :] = 0
    values[:, [0, -1], :] = 0
    out_size = (activations.shape[1] - 3) // stride + 1
    dots = np.zeros((weight.shape[0], out_size, out_size), np.int64)
    for ky in range(3):
        for kx in range(3):
            window = values[ky : ky + stride * out_size : stride, kx : kx + stride * out_size : stride]  # [y, x, c]
            dots += np.einsum("yxc,oc->oxy", window, weight[:, :, ky, kx].astype(np.int64)).transpose(0, 2, 1)
    return dots[None].astype(np.float32)


POPCOUNT_PRESETS = [preset for preset in x86_kernel_presets()]


@pytest.mark.parametrize("preset", POPCOUNT_PRESETS)
@pytest.mark.parametrize("channels,out_channels,size,stride,levels", [(64, 64, 9, 1, 1), (200, 96, 7, 2, 1), (24, 40, 6, 1, 3), (64, 16, 16, 1, 1)])
def test_table_and_byte_popcounts_compute_numpys_dots(channels, out_channels, size, stride, levels, preset):
    rng = np.random.default_rng(channels)
    weight = rng.choice([-1.0, 1.0], size=(out_channels, channels, 3, 3)).astype(np.float32)
    weight_bytes, tap_sums = pack_conv_weight_bytes(weight)
    planes = int(levels).bit_length()
    activations = rng.integers(0, 256, size=(1, size + 2, size + 2, planes * weight_bytes.shape[2]), dtype=np.uint8)
    activations[:, [0, -1], :, :] = 0  # the zero border the packing writes
    activations[:, :, [0, -1], :] = 0
    channel_bits = np.zeros(weight_bytes.shape[2] * 8, np.uint8)
    channel_bits[:channels] = 1
    activations &= np.tile(np.packbits(channel_bits, bitorder="little"), planes)  # and 0 bits past the last channel
    expected = _numpy_dots(weight, activations, channels, levels, stride)
    assert np.any(expected != 0)
    by_bytes = _conv(weight_bytes, tap_sums, activations, channels, out_channels, levels, stride, preset)
    np.testing.assert_array_equal(by_bytes, expected)
    if popcount_by_table(resolve_target(preset).tvm_target()):  # the nibble form needs AVX2's vpshufb
        by_table = _conv(split_weight_nibbles(weight_bytes), tap_sums, activations, channels, out_channels, levels, stride, preset)
        np.testing.assert_array_equal(by_table, expected)


@pytest.mark.parametrize(
    "preset,expected",
    [("x86-64", True), ("x86-64-avx512", True), ("x86-64-avx512-vpopcnt", False), ("aarch64", False)],
)
def test_table_popcount_only_where_no_byte_popcount_instruction(preset, expected):
    """AVX2 (Haswell, Skylake-X) gets tables; BITALG's vpopcntb and NEON's cnt count bytes."""
    assert popcount_by_table(resolve_target(preset).tvm_target()) is expected
