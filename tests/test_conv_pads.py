"""Explicit zero ``Pad`` nodes in front of convs (TensorFlow-style "same" padding as torch's
TorchScript exporter writes it) merge into the convs' padding (frontend/conv_pads.py), exactly;
the pads that must stay, stay."""

from __future__ import annotations

import numpy as np
from conftest import assert_outputs_match, onnxruntime_outputs
from onnx_builders import GraphBuilder

import slimtvm


def test_zero_spatial_pads_merge_into_the_convs_and_the_others_stay(tmp_path):
    g = GraphBuilder(seed=35)
    x = g.input([1, 8, 14, 14])

    def pad(value, widths):
        return g.node("Pad", [value, g.const(np.array(widths), "pads", np.int64), g.const(np.float32(0.0), "zero")], mode="constant")

    # merged: asymmetric "same" padding of a stride-2 conv, added to the conv's own pads
    y = g.conv(pad(x, [0, 0, 0, 0, 0, 0, 1, 1]), 8, 16, kernel=3, stride=2, pads=(1, 0, 1, 0))
    y = g.relu(y)
    # merged: one pad read by two convs
    shared = pad(y, [0, 0, 1, 1, 0, 0, 1, 1])
    y = g.node("Add", [g.conv(shared, 16, 16, kernel=3), g.conv(shared, 16, 16, kernel=3)])
    # kept: a pad of 1.0 (not what a conv pads with)
    one = g.node("Pad", [y, g.const(np.array([0, 0, 1, 1, 0, 0, 1, 1]), "pads", np.int64), g.const(np.float32(1.0), "one")], mode="constant")
    y = g.conv(one, 16, 16, kernel=3)
    # kept: a pad on the channel axis
    y = g.conv(pad(y, [0, 2, 0, 0, 0, 2, 0, 0]), 20, 8, kernel=1)
    # kept: a pad read by a Relu as well as by a conv
    both = pad(y, [0, 0, 1, 1, 0, 0, 1, 1])
    model = g.model([g.conv(both, 8, 8, kernel=3), g.relu(both)])
    inputs = {"x": np.random.default_rng(1).standard_normal((1, 8, 14, 14)).astype(np.float32)}
    artifact = slimtvm.compile(model, str(tmp_path / "pads.so"))
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
    assert artifact.manifest["onnx_rewrites"]["pads_merged_into_convs"] == 2
