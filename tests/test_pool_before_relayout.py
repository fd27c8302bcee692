"""lowering/pool_before_relayout.py: a global mean after a conv whose channels were padded to
whole blocks averages the blocked image; the relayout to plain and the slice back to the
model's channels move after it."""

from __future__ import annotations

import os
import sys

import pytest
from conftest import REPO, assert_outputs_match, onnxruntime_outputs
from onnx_builders import GraphBuilder, digits_like_input

import slimtvm


def _pooled_classifier_heads():
    """Two pooled heads: SqueezeNet's (a conv to 40 channels, 8·5: padded to 48 on 16-lane
    targets → ReLU → GlobalAveragePool → Flatten) and a conv to 24 channels (padded to 32) →
    ReLU → ReduceMean over the pixels without keepdims."""
    g = GraphBuilder(seed=31)
    x = g.input([1, 32, 9, 9])
    first = g.relu(g.conv(x, 32, 40, kernel=3, pads=(1, 1, 1, 1)))
    second = g.relu(g.conv(x, 32, 24, kernel=1))
    pooled = g.node("Flatten", [g.node("GlobalAveragePool", [first])])
    reduced = g.node("ReduceMean", [second], axes=[2, 3], keepdims=0)
    return g.model([pooled, reduced])


def test_global_means_after_padded_convs_average_the_blocked_image():
    """For the AVX-512 target (16-channel blocks) both means write blocked tensors and both
    relayouts to plain NCHW move one value per channel (1 × 1 pixels), not the 9 × 9 image
    (read from the scheduled kernels, benchmarks/parallel_chunks.py). Before, the 40-channel
    head relayouted and sliced its whole image, then averaged it in the plain layout."""
    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from parallel_chunks import parallel_extents

    kernels = parallel_extents(_pooled_classifier_heads(), "x86-64-avx512", with_output_shapes=True)
    means = [name for name in kernels if name.startswith("mean")]
    assert len(means) == 2, kernels
    plain = {name: shape for name, (_, shape) in kernels.items() if len(shape) == 4}
    assert len(plain) == 2 and all(shape[2:] == [1, 1] for shape in plain.values()), kernels
    assert all(len(kernels[name][1]) == 5 and kernels[name][1][2:4] == [1, 1] for name in means), kernels


@pytest.mark.parametrize("preset", ["x86-64", "host"])
def test_global_means_after_padded_convs_match_onnxruntime(tmp_path, preset):
    """The model above matches onnxruntime on every x86 kernel variant the host runs."""
    from conftest import x86_kernel_presets

    if preset not in x86_kernel_presets():
        pytest.skip(f"{preset} kernels do not run on this host")
    model = _pooled_classifier_heads()
    inputs = {"x": digits_like_input((1, 32, 9, 9), seed=32)}
    artifact = slimtvm.compile(model, str(tmp_path / "model.so"), target=preset)
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))
