"""The sign-flip comparison (slimtvm.compiler.sign_flips) on hand-made pre-Sign values: what it
allows (flips at rounding distance of 0, and whatever follows the first of them) and what it does
not (a flip far from 0 before or in the first flipped tensor, outputs that differ with no flip)."""

from __future__ import annotations

import numpy as np

from slimtvm.compiler.sign_flips import compare_with_sign_flips

REFERENCE = {
    "first": np.array([1.0, -2.0, 1e-7, 3.0], dtype=np.float32),
    "second": np.array([4.0, -1.0, 2.0, -3.0], dtype=np.float32),
    "logits": np.array([0.5, 0.25], dtype=np.float32),
}
SIGNS = ["first", "second"]


def _ours(first=None, second=None, logits=None) -> dict:
    ours = {name: value.copy() for name, value in REFERENCE.items()}
    for name, value in (("first", first), ("second", second), ("logits", logits)):
        if value is not None:
            ours[name] = np.array(value, dtype=np.float32)
    return ours


def test_no_flip_compares_the_outputs_strictly():
    assert compare_with_sign_flips(_ours(), REFERENCE, SIGNS, ["logits"]).agrees(1e-4)
    differs = compare_with_sign_flips(_ours(logits=[0.5, 0.26]), REFERENCE, SIGNS, ["logits"])
    assert differs.strict and not differs.agrees(1e-4)


def test_a_rounding_flip_allows_what_follows_it_to_differ():
    comparison = compare_with_sign_flips(_ours(first=[1.0, -2.0, -1e-7, 3.0], second=[-4.0, 1.0, 2.0, -3.0], logits=[0.1, 0.9]), REFERENCE, SIGNS, ["logits"])
    assert comparison.flips == 3 and comparison.flipped_first == "first" and not comparison.far_flips
    assert comparison.agrees(1e-4)


def test_a_far_flip_in_the_first_flipped_tensor_is_refused():
    comparison = compare_with_sign_flips(_ours(first=[1.0, 2.0, 1e-7, 3.0]), REFERENCE, SIGNS, ["logits"])
    assert comparison.far_flips == ["first"] and not comparison.agrees(1e-4)


def test_a_far_flip_before_any_rounding_flip_is_refused():
    comparison = compare_with_sign_flips(_ours(second=[-4.0, -1.0, 2.0, -3.0]), REFERENCE, SIGNS, ["logits"])
    assert comparison.far_flips == ["second"] and comparison.flipped_first == "second" and not comparison.agrees(1e-4)
