"""The bundled example: the digits CNN (trained on scikit-learn's digits) compiles and classifies
all 450 held-out images exactly as onnxruntime does."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import x86_kernel_presets

import slimtvm
from slimtvm.runtime.bench import relative_difference

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


@pytest.mark.parametrize("target", x86_kernel_presets() or ["host"])
def test_digits_cnn_predicts_like_onnxruntime_on_every_test_image(tmp_path, target):
    """On every x86 kernel variant the host runs: the AVX2 build and, on AVX-512 hosts, the host's."""
    onnx_path = os.path.join(EXAMPLES, "digits_cnn.onnx")
    artifact = slimtvm.compile(onnx_path, str(tmp_path / "digits.so"), target=target)
    fold = artifact.manifest["passes"][0]
    assert (fold["batchnorms_folded"], fold["batchnorms_decomposed"]) == (7, 1)
    model = artifact.load()
    with np.load(os.path.join(EXAMPLES, "digits_test.npz")) as data:
        images, labels = data["images"], data["labels"]
    ours, theirs = [], []
    for image in images:
        a = model.run({"image": image[None]})["logits"]
        b = _session_run(onnx_path, image)
        assert relative_difference(a, b) <= 1e-4
        ours.append(a.argmax())
        theirs.append(b.argmax())
    assert ours == theirs
    accuracy = np.mean(np.array(ours) == labels)
    assert accuracy > 0.95, accuracy  # a trained network, not noise


_SESSIONS = {}


def _session_run(path, image):
    import onnxruntime as ort

    if path not in _SESSIONS:
        _SESSIONS[path] = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return _SESSIONS[path].run(None, {"image": image[None]})[0]
