"""The sign-packing intrinsic (schedules/sign_pack_intrin.py) against numpy: every x86 build this
host runs, special values included (−0.0 and +0.0 pack as 1, NaN and −inf as 0)."""

from __future__ import annotations

import numpy as np
import pytest
import tvm
from conftest import x86_kernel_presets
from tvm import te

from slimtvm.schedules.sign_pack_intrin import sign_byte, sign_pack_intrin, threshold_byte, threshold_pack_intrin
from slimtvm.targets.kernel_target import KernelTarget
from slimtvm.targets.presets import resolve_target

PIXELS, BLOCKS = 37, 5


def _packed_by_intrinsic(values: np.ndarray, preset: str) -> np.ndarray:
    target = resolve_target(preset).tvm_target()
    lanes = KernelTarget.of(target).channel_block
    data = te.placeholder((PIXELS, BLOCKS, lanes), "float32", name="data")
    packed = te.compute((PIXELS, BLOCKS, lanes // 8), lambda p, b, k: sign_byte(lambda bit: data[p, b, k * 8 + bit]), name="packed")
    sch = tvm.s_tir.Schedule(te.create_prim_func([data, packed]))
    byte_loop = sch.get_loops(sch.get_sblock("packed"))[-1]
    sch.tensorize(byte_loop, sign_pack_intrin(lanes))
    library = tvm.compile(sch.mod, target=target)
    out = tvm.runtime.tensor(np.zeros((PIXELS, BLOCKS, lanes // 8), "uint8"))
    library["main"](tvm.runtime.tensor(values.reshape(PIXELS, BLOCKS, lanes)), out)
    return out.numpy()


@pytest.mark.parametrize("preset", x86_kernel_presets())
def test_sign_bytes_match_numpy_special_values_included(preset):
    lanes = KernelTarget.of(resolve_target(preset).tvm_target()).channel_block
    values = np.random.default_rng(3).standard_normal(PIXELS * BLOCKS * lanes).astype(np.float32)
    values[:6] = [-0.0, 0.0, np.nan, np.inf, -np.inf, -np.nan]
    values[6:10] = [np.float32(1e-45), np.float32(-1e-45), np.finfo(np.float32).max, -np.finfo(np.float32).tiny]
    expected = np.packbits((values >= 0).reshape(PIXELS, BLOCKS, lanes), axis=2, bitorder="little")
    np.testing.assert_array_equal(_packed_by_intrinsic(values, preset), expected)


def test_refuses_lanes_that_are_not_whole_bytes():
    with pytest.raises(ValueError, match="whole bytes"):
        sign_pack_intrin(12)


def _thresholds_by_intrinsic(dots: np.ndarray, flip: np.ndarray, threshold: np.ndarray, preset: str) -> np.ndarray:
    target = resolve_target(preset).tvm_target()
    channels = dots.shape[-1]
    d = te.placeholder(dots.shape, str(dots.dtype), name="dots")
    f = te.placeholder((channels,), "int32", name="flip")
    t = te.placeholder((channels,), "int32", name="threshold")
    packed = te.compute(
        (PIXELS, channels // 8),
        lambda p, k: threshold_byte(lambda bit: d[p, k * 8 + bit], lambda bit: f[k * 8 + bit], lambda bit: t[k * 8 + bit]),
        name="packed",
    )
    sch = tvm.s_tir.Schedule(te.create_prim_func([d, f, t, packed]))
    byte_loop = sch.get_loops(sch.get_sblock("packed"))[-1]
    sch.tensorize(byte_loop, threshold_pack_intrin(channels, str(dots.dtype)))
    library = tvm.compile(sch.mod, target=target)
    out = tvm.runtime.tensor(np.zeros((PIXELS, channels // 8), "uint8"))
    library["main"](*(tvm.runtime.tensor(a) for a in (dots, flip, threshold)), out)
    return out.numpy()


@pytest.mark.parametrize("preset", x86_kernel_presets())
@pytest.mark.parametrize("dot_dtype,channels", [("int16", 8), ("int16", 64), ("int32", 24)])
def test_threshold_bytes_match_numpy_extremes_included(preset, dot_dtype, channels):
    """``flip·dot ≥ threshold`` (binary_thresholds.py): flips of ±1 and 0, thresholds at the
    dot's own value, one off it, and the clipped ±(2³¹ − 1) of constant channels."""
    rng = np.random.default_rng(7)
    limit = 2**15 - 1 if dot_dtype == "int16" else 2**20
    dots = rng.integers(-limit, limit, size=(PIXELS, channels)).astype(dot_dtype)
    flip = rng.choice(np.array([-1, 0, 1], dtype=np.int32), size=channels)
    threshold = rng.integers(-limit, limit, size=channels).astype(np.int32)
    threshold[:4] = [2**31 - 1, -(2**31 - 1), 0, 1]
    dots[0, 4:8] = threshold[4:8] * flip[4:8]  # exactly at the threshold
    dots[1, 4:8] = threshold[4:8] * flip[4:8] - 1
    expected = np.packbits(dots.astype(np.int64) * flip >= threshold, axis=1, bitorder="little")
    np.testing.assert_array_equal(_thresholds_by_intrinsic(dots, flip, threshold, preset), expected)
