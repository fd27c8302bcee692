"""A batch's first, activation-heavy layers run one image at a time (passes/split_batch.py).

Real ONNX graphs with a symbolic batch, compiled for a batch of several images with each x86
kernel variant this host runs, against onnxruntime on the same batch: the split must be exact, and
the manifest must say where the model was cut (or why it was not).
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import assert_outputs_match, onnxruntime_outputs, x86_kernel_presets
from onnx_builders import GraphBuilder
from test_binarize import sign_conv

import slimtvm
from slimtvm.passes import split_batch

SIDE = 96  # 16 channels × 96 × 96 floats = 590 KB per image: above the default cut size


def _residual_cnn(binary: bool = False, side: int = SIDE):
    """A residual block at full size → max-pool → strided conv → global pool → classifier, with a
    symbolic batch. Float: conv → ReLU → (conv → ReLU → conv) + skip → ReLU. Binary (Bi-Real
    style): the 16-channel input + ±α conv of its Sign (read from the input itself, so that no
    value before the Sign is a rounding away from 0 in one engine and not the other)."""
    g = GraphBuilder(seed=3)
    channels = 16 if binary else 3
    x = g.input([1, channels, side, side], dims=["N", channels, side, side])
    if binary:
        block = g.node("Add", [sign_conv(g, x, 16, 16, pads=(1, 1, 1, 1)), x])
    else:
        y = g.relu(g.conv(x, 3, 16, pads=(1, 1, 1, 1)))
        inner = g.relu(g.conv(y, 16, 16, pads=(1, 1, 1, 1)))
        block = g.relu(g.node("Add", [g.conv(inner, 16, 16, pads=(1, 1, 1, 1)), y]))
    pooled = g.node("MaxPool", [block], kernel_shape=[2, 2], strides=[2, 2])
    z = g.relu(g.conv(pooled, 16, 32, stride=2, pads=(1, 1, 1, 1)))
    flat = g.node("Flatten", [g.node("GlobalAveragePool", [z])])
    return g.model(g.gemm(flat, 32, 10))


def _split_report(artifact) -> dict:
    return next(p for p in artifact.manifest["passes"] if p["name"] == "split_batch")


def _compile_and_check(model, batch, preset, tmp_path):
    shape = (batch, int(model.graph.input[0].type.tensor_type.shape.dim[1].dim_value), SIDE, SIDE)
    inputs = {"x": np.random.default_rng(batch).standard_normal(shape).astype(np.float32)}
    artifact = slimtvm.compile(model, str(tmp_path / f"b{batch}.so"), target=preset, input_shapes={"x": shape})
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
    binary_blocks = next(p for p in artifact.manifest["passes"] if p["name"] == "binary_blocks")
    return {**_split_report(artifact), "binary_convs_lowered": binary_blocks["binary_convs_lowered"]}


@pytest.mark.parametrize("preset", x86_kernel_presets())
@pytest.mark.parametrize("binary", [False, True], ids=["float", "binary"])
def test_a_batch_runs_its_first_layers_per_image_exactly(tmp_path, preset, binary):
    model = _residual_cnn(binary)
    report = _compile_and_check(model, 3, preset, tmp_path)
    assert report["images"] == 3 and report["pieces"] == 3, report
    assert report["cut_bytes_per_image"] == 16 * SIDE * SIDE * 4  # the residual block's output
    assert report["layers_per_image"] >= (3 if binary else 7), report
    assert report["binary_convs_lowered"] == (3 if binary else 0)  # one per image


@pytest.mark.parametrize("preset", x86_kernel_presets()[:1])
def test_a_batch_past_the_piece_limit_runs_in_groups_of_images(tmp_path, preset, monkeypatch):
    monkeypatch.setattr(split_batch, "MAX_PIECES", 2)
    report = _compile_and_check(_residual_cnn(), 5, preset, tmp_path)  # groups of 3 and 2 images
    assert report["images"] == 5 and report["pieces"] == 2, report


@pytest.mark.parametrize("preset", x86_kernel_presets()[:1])
def test_batch_one_and_small_activations_are_not_split(tmp_path, preset, monkeypatch):
    assert _compile_and_check(_residual_cnn(), 1, preset, tmp_path)["why_not"] == "batch 1"
    monkeypatch.setattr(split_batch, "MIN_SPLIT_BYTES_PER_IMAGE", 16 * SIDE * SIDE * 4 + 1)
    report = _compile_and_check(_residual_cnn(), 2, preset, tmp_path)
    assert report["images"] == 0 and "no block boundary" in report["why_not"], report


def _xnor_chain(last_stride: int):
    """Three Sign → ±α conv → BN blocks (the binary lowering fuses each BN with the next Sign
    into an integer threshold), the last with stride ``last_stride``, then a float tail."""
    g = GraphBuilder(seed=5)
    x = g.input([1, 16, SIDE, SIDE], dims=["N", 16, SIDE, SIDE])
    y = g.batchnorm(sign_conv(g, x, 16, 16, pads=(1, 1, 1, 1)), 16)
    y = g.batchnorm(sign_conv(g, y, 16, 16, pads=(1, 1, 1, 1)), 16)
    y = g.batchnorm(sign_conv(g, y, 16, 16, stride=last_stride, pads=(1, 1, 1, 1)), 16)
    pooled = g.node("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2])
    z = g.relu(g.conv(pooled, 16, 32, stride=2, pads=(1, 1, 1, 1)))
    return g.model(g.gemm(g.node("Flatten", [g.node("GlobalAveragePool", [z])]), 32, 10))


@pytest.mark.parametrize("preset", x86_kernel_presets()[:1])
def test_a_cut_never_separates_a_batch_norm_from_its_sign(tmp_path, preset):
    def fused(artifact_report_batch):
        model, batch = artifact_report_batch
        shape = (batch, 16, SIDE, SIDE)
        inputs = {"x": np.random.default_rng(1).standard_normal(shape).astype(np.float32)}
        artifact = slimtvm.compile(model, str(tmp_path / f"x{batch}.so"), target=preset, input_shapes={"x": shape})
        assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
        passes = {p["name"]: p for p in artifact.manifest["passes"]}
        return passes["split_batch"], passes["binary_blocks"]["thresholds_fused"]

    # cut after the third block's BN, which the max-pool reads: every image keeps its 2 thresholds
    report, thresholds = fused((_xnor_chain(1), 3))
    assert report["images"] == 3 and thresholds == 2 * 3, report
    # the 96 × 96 block outputs are read by Signs alone: no cut between a BN and its Sign
    report, thresholds = fused((_xnor_chain(2), 3))
    assert report["images"] == 0 and thresholds == 2, report
