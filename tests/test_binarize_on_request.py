"""``--binarize weights|weights+activations`` (lossy, only when asked): layers become BWN /
XNOR-Net form, first and last kept float by default, the error is measured and reported, and the
compiled binarized model computes exactly what onnxruntime computes on that binarized model."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from conftest import assert_outputs_match, fails_cleanly, onnxruntime_outputs

import slimtvm
from slimtvm.compress.binarize_float_layers import BinarizeRequest, binarize_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = os.path.join(REPO, "examples", "digits_cnn.onnx")


def test_xnor_binarization_compiles_to_binary_kernels_and_reports_its_error(tmp_path):
    images = np.load(os.path.join(REPO, "examples", "digits_test.npz"))["images"]
    np.savez(tmp_path / "calibration.npz", image=images[:6])
    request = BinarizeRequest("weights+activations", calibration=str(tmp_path / "calibration.npz"))
    saved = str(tmp_path / "xnor.onnx")
    artifact = slimtvm.compile(DIGITS, str(tmp_path / "xnor.so"), binarize=request, save_onnx=saved)
    report = artifact.manifest["binarize_request"]
    assert report["kept_float"] == ["/stem/Conv", "/fc/Gemm"] and report["calibration_inputs"] == 6
    assert len(report["layers"]) == 4 and all(layer["relative_error"] > 0 for layer in report["layers"])  # lossy, and measured
    passes = {p["name"]: p for p in artifact.manifest["passes"]}
    assert passes["binarize"]["binary_convs"] == passes["binary_blocks"]["binary_convs_lowered"] == 4
    # exact against onnxruntime running the saved binarized model (on a calibration input: no value
    # lies within rounding of a binarizer's threshold there)
    inputs = {"image": images[2:3]}
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(saved, inputs))


def test_weights_only_binarization_is_recognised_as_bwn(tmp_path):
    artifact = slimtvm.compile(DIGITS, str(tmp_path / "bwn.so"), binarize=BinarizeRequest("weights", keep_float=("first",)))
    assert len(artifact.manifest["binarize_request"]["layers"]) == 5
    binarize = next(p for p in artifact.manifest["passes"] if p["name"] == "binarize")
    assert binarize["binary_convs"] == 0 and binarize["binary_weight_layers"] >= 4  # a BN folded into the Gemm makes it float again


def test_binarize_refuses_unknown_layers_and_options_cleanly(tmp_path, capsys):
    fails_cleanly(
        ["compile", DIGITS, "-o", str(tmp_path / "m.so"), "--binarize", "weights", "--keep-float", "first,/no/such"],
        capsys,
        tmp_path,
        "--keep-float: '/no/such' is not a Conv/Gemm/MatMul layer",
    )
    fails_cleanly(["compile", DIGITS, "-o", str(tmp_path / "m.so"), "--keep-float", "first"], capsys, tmp_path, "only apply with --binarize")
    np.savez(tmp_path / "bad.npz", image=np.zeros((3, 5), np.float32))
    fails_cleanly(
        ["compile", DIGITS, "-o", str(tmp_path / "m.so"), "--binarize", "weights", "--calibration", str(tmp_path / "bad.npz")],
        capsys,
        tmp_path,
        "is not samples of the input shape",
    )


@pytest.mark.parametrize("keep", [("none",), ("first", "last")])
def test_binarize_model_keeps_the_asked_layers_float(keep):
    model, binarized, kept, _, _ = binarize_model(onnx.load(DIGITS), "weights+activations", keep)
    assert len(binarized) + len(kept) == 6
    assert len([n for n in model.graph.node if n.op_type == "Where"]) == len(binarized)
