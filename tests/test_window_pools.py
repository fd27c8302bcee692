"""Average and max pools against onnxruntime on every x86 build this host runs. Average pools whose
windows all lie inside the image take lowering/average_pool.py (a window sum divided by the
constant count), the others TVM's legalization (padding with and without counting it, ceil mode).
Windows without padding checks fold each tap in with one vector add or max
(schedules/accumulate_intrin.py); padded ones keep the unrolled form."""

from __future__ import annotations

import re

import pytest
import tvm
from conftest import assert_outputs_match, onnxruntime_outputs, scheduled_kernels, x86_kernel_presets
from onnx_builders import GraphBuilder, digits_like_input

import slimtvm
from slimtvm.targets.presets import resolve_target

POOLS = [  # (kernel, stride, pads, count_include_pad, ceil_mode, takes the constant-count form)
    (2, 2, [0, 0, 0, 0], 0, 0, True),  # Bi-Real Net's downsampling shortcut
    (3, 2, [0, 0, 0, 0], 0, 0, True),  # a count of 9: a true division
    (3, 1, [1, 1, 1, 1], 0, 0, False),  # padding not counted: per-pixel counts
    (3, 1, [1, 1, 1, 1], 1, 0, False),
    (2, 2, [0, 0, 0, 0], 0, 1, False),  # ceil mode on an odd image: a partial last window
]
MAX_POOLS = [  # (kernel, stride, pads, folded by a vector max per tap)
    (2, 1, [0, 0, 0, 0], True),  # QuickNet's
    (3, 2, [0, 0, 0, 0], True),
    (3, 2, [1, 1, 1, 1], False),  # ResNet's, padded: border checks
]


def _pool_model(channels: int, size: int, kernel, stride, pads, count_include_pad=0, ceil_mode=0, op="AveragePool"):
    g = GraphBuilder(seed=channels + kernel)
    x = g.input([1, channels, size, size])
    y = g.conv(x, channels, channels, kernel=3, pads=(1, 1, 1, 1))  # blocked layout before the pool; signed values
    attrs = {"kernel_shape": [kernel, kernel], "strides": [stride, stride], "pads": pads, "ceil_mode": ceil_mode}
    if op == "AveragePool":
        attrs["count_include_pad"] = count_include_pad
    return g.model(g.node(op, [y], **attrs))


def _pool_kernel_script(model, preset: str, name: str = "avg_pool2d") -> str:
    mod = scheduled_kernels(model, preset)
    (script,) = [func.script() for gvar, func in mod.functions.items() if name in gvar.name_hint]
    return script


@pytest.mark.parametrize("preset", x86_kernel_presets())
@pytest.mark.parametrize("kernel,stride,pads,count_include_pad,ceil_mode,constant_count", POOLS)
def test_average_pools_match_onnxruntime(tmp_path, preset, kernel, stride, pads, count_include_pad, ceil_mode, constant_count):
    model = _pool_model(16, 13, kernel, stride, pads, count_include_pad, ceil_mode)
    inputs = {"x": digits_like_input((1, 16, 13, 13), seed=kernel)}
    artifact = slimtvm.compile(model, str(tmp_path / "pool.so"), target=preset)
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
    script = _pool_kernel_script(model, preset)
    assert ("T.min(" not in script.split('sblock("pool_avg")')[1]) == constant_count
    if constant_count:  # the window sum is one vector add per tap (accumulate_intrin.py), in parallel rows
        assert "T.parallel(" in script and "T.Ramp(" in script


@pytest.mark.parametrize("preset", x86_kernel_presets())
@pytest.mark.parametrize("kernel,stride,pads,vector_max", MAX_POOLS)
def test_max_pools_match_onnxruntime(tmp_path, preset, kernel, stride, pads, vector_max):
    model = _pool_model(16, 13, kernel, stride, pads, op="MaxPool")
    inputs = {"x": digits_like_input((1, 16, 13, 13), seed=kernel)}
    artifact = slimtvm.compile(model, str(tmp_path / "pool.so"), target=preset)
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
    assert ("T.Ramp(" in _pool_kernel_script(model, preset, "max_pool2d")) == vector_max


EIGHT_CHANNEL_BLOCK_POOLS = [  # (pool type, kernel, stride, pads): ShuffleNet v1's max-pool and its shortcut's average pool
    ("max", 3, 2, (1, 1, 1, 1)),
    ("avg", 3, 2, (1, 1, 1, 1)),
    ("max", 2, 2, (0, 0, 0, 0)),
]


@pytest.mark.parametrize("preset", x86_kernel_presets())
@pytest.mark.parametrize("pool_type,kernel,stride,pads", EIGHT_CHANNEL_BLOCK_POOLS)
def test_pools_in_8_channel_blocks_run_vectorized_and_match_numpy(preset, pool_type, kernel, stride, pads):
    """16-lane targets fall back to 8-channel blocks for a model whose 8·k-channel convs cannot
    be padded (``model_channel_block``; the light ShuffleNet until its depthwise inputs were
    padded). Their pools take the blocked-window schedule, rows in parallel and a vector per
    channel block, on every build; the 16-lane one had left them one scalar loop over every
    output value (284 µs for ShuffleNet's first max-pool, 22 µs with the vector).
    Checked against numpy on TOPI's NCHW8c pool."""
    import numpy as np
    from tvm import s_tir, te, topi

    from slimtvm.schedules.generic_cpu import GenericCPU
    from slimtvm.targets.kernel_target import KernelTarget

    target = resolve_target(preset).tvm_target()
    data = te.placeholder((1, 3, 12, 12, 8), "float32", name="x")
    pooled = topi.nn.pool2d(data, (kernel, kernel), (stride, stride), (1, 1), pads, pool_type, layout="NCHW8c", count_include_pad=False)
    scheduled = GenericCPU(KernelTarget.of(target).lanes).schedule(s_tir.Schedule(te.create_prim_func([data, pooled])))
    assert scheduled is not None
    script = scheduled.mod.script()
    parallel = [int(extent) for extent in re.findall(r"T\.parallel\((?:T\.int64\()?(\d+)", script)]
    assert parallel and max(parallel) <= 3 * 12, script  # rows of channel blocks, not every output value
    library = tvm.tirx.build(scheduled.mod, target=target)
    x = np.random.default_rng(kernel).standard_normal((1, 3, 12, 12, 8)).astype(np.float32)
    out = tvm.runtime.tensor(np.zeros([int(d) for d in pooled.shape], np.float32))
    library["main"](tvm.runtime.tensor(x), out)
    top, left, bottom, right = pads
    fill = -np.inf if pool_type == "max" else np.nan
    padded = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right), (0, 0)), constant_values=fill)
    size = (12 + top + bottom - kernel) // stride + 1
    windows = np.stack([padded[:, :, dy : dy + stride * size : stride, dx : dx + stride * size : stride] for dy in range(kernel) for dx in range(kernel)])
    expected = windows.max(axis=0) if pool_type == "max" else np.nanmean(windows, axis=0)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6, atol=1e-6)
