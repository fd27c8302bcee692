"""Property tests: random binarized graphs (tests/binary_graphs.py) compiled by slimtvm give
onnxruntime's outputs (≤ 1e-4 relative; popcount sums are exact, only the float scale and the
reordered float sums of batch norm differ). 300 examples in the default suite, more with -m slow.

Without a residual, the BN (and max-pool) before the second Sign become integer thresholds (and
an OR) in the first conv, which writes packed bits: the manifest must say so. The one allowed
difference — a value feeding the second Sign within rounding distance of 0 — is detected from a
probe model's pre-Sign output and such examples are discarded (``assume``), not tolerated.
"""

from __future__ import annotations

import pytest
from binary_graphs import conv_graph, conv_specs, dense_graph, dense_specs, sign_margin_ok
from conftest import assert_outputs_match, onnxruntime_outputs
from hypothesis import HealthCheck, assume, given, settings

import slimtvm

ONE_TERM = 0.01  # below one term of a binary dot product: |α| ≥ 0.05, BN scales ≥ 0.35
COMMON = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _check_conv(spec, tmp_path):
    model, inputs, probe = conv_graph(spec)
    assume(sign_margin_ok(probe, inputs, onnxruntime_outputs))
    artifact = slimtvm.compile(model, str(tmp_path / "model.so"))
    passes = {p["name"]: p for p in artifact.manifest["passes"]}
    assert passes["binarize"]["binary_convs"] == passes["binary_blocks"]["binary_convs_lowered"] == (2 if spec.second else 1), passes
    fused = bool(spec.second) and not spec.residual and spec.groups == 1
    assert passes["binary_blocks"]["thresholds_fused"] == int(fused), passes
    assert passes["binary_blocks"]["max_pools_on_bits"] == int(fused and spec.maxpool), passes
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs), floor=ONE_TERM)


@settings(max_examples=230, **COMMON)
@given(spec=conv_specs())
def test_random_binary_convs_match_onnxruntime(spec, tmp_path):
    _check_conv(spec, tmp_path)


@settings(max_examples=70, **COMMON)
@given(dims=dense_specs())
def test_random_binary_dense_match_onnxruntime(dims, tmp_path):
    model, inputs = dense_graph(*dims)
    artifact = slimtvm.compile(model, str(tmp_path / "model.so"))
    assert next(p for p in artifact.manifest["passes"] if p["name"] == "binarize")["binary_dense"] == 1
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs), floor=ONE_TERM)


@pytest.mark.slow
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(spec=conv_specs())
def test_many_random_binary_convs_match_onnxruntime(spec, tmp_path):
    _check_conv(spec, tmp_path)
