"""The binarized digits network (examples/digits_bnn.onnx, trained by examples/train_digits_bnn.py):
its binary layers are recognised, and slimtvm predicts what onnxruntime predicts on every test image.

Sign flips: a pre-Sign value computed in float by both engines can land within rounding distance
of 0, and then its sign may differ (float sums are reordered). Rather than loosen the tolerance,
the test outputs every Sign's input, finds images where a sign differs, checks that each such
value is within rounding distance of 0, and compares the logits strictly on all other images
(slimtvm.compiler.sign_flips).
"""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from conftest import onnxruntime_outputs

import slimtvm
from slimtvm.compiler.sign_flips import compare_with_sign_flips, with_sign_inputs_as_outputs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(REPO, "examples", "digits_bnn.onnx")


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    model, sign_inputs = with_sign_inputs_as_outputs(onnx.load(MODEL))
    artifact = slimtvm.compile(model, str(tmp_path_factory.mktemp("bnn") / "bnn.so"))
    return model, sign_inputs, artifact


def test_the_binary_layers_are_recognised(compiled):
    _, sign_inputs, artifact = compiled
    report = next(p for p in artifact.manifest["passes"] if p["name"] == "binarize")
    assert report["binary_convs"] == 3 and report["binary_dense"] == 1, report
    lowered = next(p for p in artifact.manifest["passes"] if p["name"] == "binary_blocks")
    assert lowered["binary_convs_lowered"] == 3 and lowered["binary_dense_lowered"] == 1, lowered
    assert len(sign_inputs) == 4


def test_same_predictions_and_accuracy_as_onnxruntime(compiled):
    model, sign_inputs, artifact = compiled
    with np.load(os.path.join(REPO, "examples", "digits_test.npz")) as data:
        images, labels = data["images"], data["labels"]
    runner = artifact.load()
    ours_correct = reference_correct = flipped_images = 0
    for image, label in zip(images, labels):
        inputs = {"image": image[None].astype(np.float32)}
        ours, reference = runner.run(inputs), onnxruntime_outputs(model, inputs)
        comparison = compare_with_sign_flips(ours, reference, sign_inputs, ["logits"])
        assert comparison.agrees(1e-4), comparison  # flips only within rounding distance of 0; else the logits agree
        flipped_images += comparison.flips > 0
        assert np.argmax(ours["logits"]) == np.argmax(reference["logits"])  # every image, flips or not
        ours_correct += int(np.argmax(ours["logits"]) == label)
        reference_correct += int(np.argmax(reference["logits"]) == label)
    assert flipped_images <= len(images) // 50, f"{flipped_images} images had sign flips"  # rare, near-0 only
    assert ours_correct == reference_correct
    assert reference_correct / len(labels) > 0.9  # a real, trained network
