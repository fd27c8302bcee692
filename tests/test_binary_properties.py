"""Property tests: random binarized graphs (tests/binary_graphs.py) compiled by slimtvm give
onnxruntime's outputs (≤ 1e-4 relative; popcount sums are exact, only the float scale and the
reordered float sums of batch norm differ). 300 examples in the default suite, more with -m slow.

The one allowed difference — a value feeding the second Sign within rounding distance of 0 — is
detected from the pre-Sign output and such examples are discarded (``assume``), not tolerated.
"""

from __future__ import annotations

import pytest
from binary_graphs import conv_graph, conv_specs, dense_graph, dense_specs, near_threshold
from conftest import assert_outputs_match, onnxruntime_outputs
from hypothesis import HealthCheck, assume, given, settings

import slimtvm

COMMON = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _check_conv(spec, tmp_path):
    model, inputs, pre_sign = conv_graph(spec)
    expected = onnxruntime_outputs(model, inputs)
    assume(pre_sign is None or not near_threshold(expected[pre_sign]))
    artifact = slimtvm.compile(model, str(tmp_path / "model.so"))
    report = next(p for p in artifact.manifest["passes"] if p["name"] == "binarize")
    assert report["binary_convs"] == (2 if spec.second else 1), report
    assert_outputs_match(artifact.load().run(inputs), expected)


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
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs))


@pytest.mark.slow
@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(spec=conv_specs())
def test_many_random_binary_convs_match_onnxruntime(spec, tmp_path):
    _check_conv(spec, tmp_path)
