"""Exact removal of constant and unread channels (passes/remove_dead_channels.py), against
onnxruntime on the original models: structurally pruned ResNet-18 (ln_structured, tiny fixture),
network slimming (BN scales of zero), dead inputs, and random graphs around them."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import assert_outputs_match, onnxruntime_outputs
from dead_channel_graphs import dead_channel_graph, dead_channel_specs
from hypothesis import HealthCheck, given, settings
from onnx_builders import GraphBuilder

import slimtvm

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")
COMMON = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _report(artifact) -> dict:
    return next(entry for entry in artifact.manifest["passes"] if entry["name"] == "dead_channels")


def test_ln_structured_resnet18_compiles_to_smaller_convs(tmp_path):
    """Half the filters of every block's first conv are zero (BN after them): 8 block pairs shrink."""
    path = os.path.join(DATA, "pruned_resnet18_filters50_tiny.onnx")
    artifact = slimtvm.compile(path, str(tmp_path / "m.so"))
    inputs = {"image": np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)}
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(path, inputs))
    report = _report(artifact)
    assert report["layers_shrunk"] == 16 and report["constants_absorbed"] == report["filters_removed"] > 0
    assert report["macs_after"] < 0.8 * report["macs_before"]
    shrunk = [layer for layer in report["layers"] if layer["out_after"] < layer["out_before"]]
    assert all(layer["out_after"] == layer["out_before"] // 2 for layer in shrunk)


def _chain(zero_filters=(), zero_scales=(), dead_inputs=(), residual=False, pad=1):
    """conv 6→12 (3×3) → BN → ReLU → [+ x branch] → conv 12→8 (3×3, padded): the building block."""
    g = GraphBuilder(seed=3)
    x = g.input([1, 6, 9, 9])
    weight = g.rng.normal(0, 0.3, size=(12, 6, 3, 3))
    weight[list(zero_filters)] = 0
    y = g.node("Conv", [x, g.const(weight), g.const(g.rng.normal(0, 0.3, size=12), "b")], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    gamma = g.rng.uniform(0.5, 1.5, size=12)
    gamma[list(zero_scales)] = 0
    params = [gamma, g.rng.normal(0, 0.5, size=12), g.rng.normal(0, 0.3, size=12), g.rng.uniform(0.5, 2, size=12)]
    y = g.relu(g.node("BatchNormalization", [y, *(g.const(p, "bn") for p in params)]))
    if residual:
        y = g.node("Add", [y, g.conv(x, 6, 12, kernel=1)])
    consumer = g.rng.normal(0, 0.3, size=(8, 12, 3, 3))
    consumer[:, list(dead_inputs)] = 0
    out = g.node("Conv", [y, g.const(consumer), g.const(g.rng.normal(0, 0.1, size=8), "b")], kernel_shape=[3, 3], pads=[pad] * 4)
    model = g.model(out)
    return model, {"x": np.random.default_rng(1).standard_normal((1, 6, 9, 9)).astype(np.float32)}


@pytest.mark.parametrize(
    "case,expected",
    [
        (dict(zero_filters=(0, 3, 7)), dict(filters_removed=3, constants_absorbed=3)),
        (dict(zero_scales=(1, 2)), dict(filters_removed=2, constants_absorbed=2)),  # network slimming
        (dict(dead_inputs=(4, 5, 11)), dict(filters_removed=3, constants_absorbed=0)),  # read by nobody
        (dict(zero_filters=(0,), dead_inputs=(0, 1)), dict(filters_removed=2, constants_absorbed=0)),
        (dict(zero_filters=(0, 3), pad=0), dict(filters_removed=2, constants_absorbed=2)),
    ],
)
def test_constant_and_unread_channels_go_exactly(tmp_path, case, expected):
    model, inputs = _chain(**case)
    artifact = slimtvm.compile(model, str(tmp_path / "m.so"))
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
    report = _report(artifact)
    assert {key: report[key] for key in expected} == expected, report


def test_constant_channel_joined_with_a_residual_stays_and_says_why(tmp_path):
    model, inputs = _chain(zero_filters=(0, 3), residual=True)
    artifact = slimtvm.compile(model, str(tmp_path / "m.so"))
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
    report = _report(artifact)
    assert report["filters_removed"] == 0
    assert report["constant_channels_kept"] == {"joined with a non-constant channel in add": 2}


def test_compile_prints_what_was_removed(tmp_path, capsys):
    from slimtvm.cli import main

    model, _ = _chain(zero_filters=(0, 3, 7))
    path = tmp_path / "chain.onnx"
    path.write_bytes(model.SerializeToString())
    assert main(["compile", str(path), "-o", str(tmp_path / "m.so")]) == 0
    out = capsys.readouterr().out
    assert "dead_channels: 3 filters and 3 input channels removed exactly (3 constant channels folded into the layers after them)" in out


@settings(max_examples=int(os.environ.get("SLIMTVM_DEAD_CHANNEL_EXAMPLES", "40")), **COMMON)
@given(spec=dead_channel_specs())
def test_random_structurally_pruned_graphs_match_onnxruntime(tmp_path, spec):
    model, inputs, zero_filters = dead_channel_graph(spec)
    artifact = slimtvm.compile(model, str(tmp_path / "m.so"))
    expected = onnxruntime_outputs(model, inputs)
    assert_outputs_match(artifact.load().run(inputs), expected, floor=1e-3)
    report = _report(artifact)
    if spec.removable:
        assert report["filters_removed"] >= zero_filters, (spec, report)
