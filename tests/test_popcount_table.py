"""The AVX2 table popcount (weight nibbles) computes the same dot products as LLVM's byte
popcount (weight bytes), and the targets that get it are the ones meant to."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from tvm import s_tir, te

from slimtvm.schedules import binary_conv_compute as packed_conv
from slimtvm.schedules.binary_conv_schedule import BinaryConv
from slimtvm.schedules.binary_weights import pack_conv_weight_bytes, split_weight_nibbles
from slimtvm.targets.presets import popcount_by_table, resolve_target


def _conv(weights: np.ndarray, tap_sums: np.ndarray, activations: np.ndarray, channels: int, out_channels: int, levels: int, stride: int) -> np.ndarray:
    """The packed binary conv (α = 1, so its float output holds the integer dot products) for
    these weights, bytes or nibbles, built with slimtvm's default schedule and run here."""
    size = activations.shape[1] - 2
    weight = te.placeholder(weights.shape, "uint8", name="weights")
    taps = te.placeholder(tap_sums.shape, str(tap_sums.dtype), name="tap_sums")
    alpha = te.placeholder((out_channels,), "float32", name="alpha")
    source = te.placeholder(activations.shape, "uint8", name="packed")
    out = packed_conv.binary_conv2d_packed(source, weight, alpha, taps, channels, (size, size), (stride, stride), (1, 1, 1, 1), (1, 1), levels=levels)
    scheduled = BinaryConv(8).schedule(s_tir.Schedule(te.create_prim_func([source, weight, alpha, taps, out])))
    library = tvm.tirx.build(scheduled.mod, target=resolve_target("host").tvm_target())
    arrays = [tvm.runtime.tensor(a) for a in (activations, weights, np.ones(out_channels, np.float32), tap_sums)]
    result = tvm.runtime.tensor(np.zeros([int(d) for d in out.shape], "float32"))
    library["main"](*arrays, result)
    return result.numpy()


@pytest.mark.skipif(not popcount_by_table(resolve_target("host").tvm_target()), reason="the host has no AVX2, or has AVX-512 BITALG")
@pytest.mark.parametrize("channels,out_channels,size,stride,levels", [(64, 64, 9, 1, 1), (200, 96, 7, 2, 1), (24, 40, 6, 1, 3), (64, 16, 16, 1, 1)])
def test_table_and_byte_popcounts_give_the_same_dots(channels, out_channels, size, stride, levels):
    rng = np.random.default_rng(channels)
    weight = rng.choice([-1.0, 1.0], size=(out_channels, channels, 3, 3)).astype(np.float32)
    weight_bytes, tap_sums = pack_conv_weight_bytes(weight)
    planes = int(levels).bit_length()
    activations = rng.integers(0, 256, size=(1, size + 2, size + 2, planes * weight_bytes.shape[2]), dtype=np.uint8)
    activations[:, [0, -1], :, :] = 0  # the zero border the packing writes
    activations[:, :, [0, -1], :] = 0
    by_bytes = _conv(weight_bytes, tap_sums, activations, channels, out_channels, levels, stride)
    by_table = _conv(split_weight_nibbles(weight_bytes), tap_sums, activations, channels, out_channels, levels, stride)
    np.testing.assert_array_equal(by_table, by_bytes)
    assert np.any(by_bytes != 0)


@pytest.mark.parametrize(
    "preset,expected",
    [("x86-64", True), ("x86-64-avx512", True), ("x86-64-avx512-vpopcnt", False), ("aarch64", False)],
)
def test_table_popcount_only_where_no_byte_popcount_instruction(preset, expected):
    """AVX2 (Haswell, Skylake-X) gets tables; BITALG's vpopcntb and NEON's cnt count bytes."""
    assert popcount_by_table(resolve_target(preset).tvm_target()) is expected
