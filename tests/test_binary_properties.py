"""Property tests: random binarized graphs (tests/binary_graphs.py) compiled by slimtvm give
onnxruntime's outputs (≤ 1e-4 relative; popcount sums are exact, only the float scale and the
reordered float sums of batch norm differ). 300 examples in the default suite, more with -m slow.

Without a residual, the BN (and max-pool) before the second Sign become integer thresholds (and
an OR) in the first conv, which writes packed bits: the manifest must say so. The one allowed
difference — a value feeding the second Sign within rounding distance of 0 — is detected from a
probe model's pre-Sign output and such examples are discarded (``assume``), not tolerated; the
discarded ones are counted and bounded (DISCARDED_AT_MOST). The conv graphs run for every
x86 kernel variant the host executes (the AVX2 table popcount, and AVX-512's vpopcntb).
"""

from __future__ import annotations

import os

import pytest
from binary_graphs import conv_graph, conv_specs, dense_graph, dense_specs, sign_margin_ok
from conftest import assert_outputs_match, onnxruntime_outputs, x86_kernel_presets
from hypothesis import HealthCheck, assume, given, settings

import slimtvm

ONE_TERM = 0.01  # below one term of a binary dot product: |α| ≥ 0.05, BN scales ≥ 0.35
COMMON = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


# Share of generated graphs discarded because a pre-Sign value sits at rounding distance of 0:
# 28 of 143 (20%) on 2026-11-30, the same for both kernel variants (derandomized). A bound, so
# that a generator change that made the property vacuous fails the test.
DISCARDED_AT_MOST = 0.25


def _check_conv(spec, workdir, target, counts):
    model, inputs, probe = conv_graph(spec)
    if not sign_margin_ok(probe, inputs, onnxruntime_outputs):
        counts["discarded"] += 1
        assume(False)
    counts["run"] += 1
    artifact = slimtvm.compile(model, os.path.join(workdir, "model.so"), target=target)
    passes = {p["name"]: p for p in artifact.manifest["passes"]}
    assert passes["binarize"]["binary_convs"] == passes["binary_blocks"]["binary_convs_lowered"] == (2 if spec.second else 1), passes
    fused = bool(spec.second) and not spec.residual and spec.groups == 1
    assert passes["binary_blocks"]["thresholds_fused"] == int(fused), passes
    assert passes["binary_blocks"]["max_pools_on_bits"] == int(fused and spec.maxpool), passes
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs), floor=ONE_TERM)


def _run_convs(examples: int, workdir: str, target: str) -> None:
    """``examples`` random binary conv graphs for ``target``; the ones discarded by ``assume`` are
    counted and must stay a small share (else the property would test little)."""
    counts = {"run": 0, "discarded": 0}

    @settings(max_examples=examples, **COMMON)
    @given(spec=conv_specs())
    def check(spec):
        _check_conv(spec, workdir, target, counts)

    check()
    total = counts["run"] + counts["discarded"]
    print(f"binary conv graphs for {target}: {counts['run']} checked, {counts['discarded']} discarded (sign at rounding distance of 0)")
    assert counts["run"] >= 0.9 * examples and counts["discarded"] <= DISCARDED_AT_MOST * total, counts


CONV_EXAMPLES = 230  # split between the x86 kernel variants this host runs (the AVX2 build and, on AVX-512 hosts, the host's)


@pytest.mark.parametrize("target", x86_kernel_presets() or ["host"])
def test_random_binary_convs_match_onnxruntime(tmp_path, target):
    _run_convs(CONV_EXAMPLES // max(1, len(x86_kernel_presets())), str(tmp_path), target)


@settings(max_examples=70, **COMMON)
@given(dims=dense_specs())
def test_random_binary_dense_match_onnxruntime(dims, tmp_path):
    model, inputs = dense_graph(*dims)
    artifact = slimtvm.compile(model, str(tmp_path / "model.so"))
    assert next(p for p in artifact.manifest["passes"] if p["name"] == "binary_blocks")["binary_dense_lowered"] == 1
    assert_outputs_match(artifact.load().run(inputs), onnxruntime_outputs(model, inputs), floor=ONE_TERM)


@pytest.mark.slow
def test_many_random_binary_convs_match_onnxruntime(tmp_path):
    _run_convs(1500, str(tmp_path), "host")
