"""Classify every held-out digit with a compiled artifact and with onnxruntime, and compare.

    python examples/evaluate_digits.py out/digits_cnn.so examples/digits_cnn.onnx
    python examples/evaluate_digits.py out/digits_bnn.so examples/digits_bnn.onnx --sign-flips-allowed

Prints both accuracies, how many predictions agree, and the largest relative logit difference.
Exit status 0 when every prediction agrees and every image's logits are within 1e-4 (relative).
With ``--sign-flips-allowed`` (binarized models) images beyond 1e-4 are counted instead: a value
within rounding distance of a Sign threshold may flip, because float sums are reordered
(tests/test_digits_bnn.py checks that each such difference is one); predictions must still agree.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import onnxruntime as ort

import slimtvm
from slimtvm.runtime.bench import relative_difference

HERE = os.path.dirname(os.path.abspath(__file__))


def main(library: str, onnx_path: str, sign_flips_allowed: bool = False) -> int:
    model = slimtvm.load(library)
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    input_name = model.input_names[0]
    with np.load(os.path.join(HERE, "digits_test.npz")) as data:
        images, labels = data["images"], data["labels"]
    ours, theirs, worst, beyond = [], [], 0.0, 0
    for image in images:
        batch = {input_name: image[None]}
        a = model.run(batch)[model.output_names[0]]
        b = session.run(None, batch)[0]
        difference = relative_difference(a, b)
        worst = max(worst, difference)
        beyond += int(difference > 1e-4)
        ours.append(int(a.argmax()))
        theirs.append(int(b.argmax()))
    ours, theirs = np.array(ours), np.array(theirs)
    print(f"{len(labels)} test digits: slimtvm accuracy {np.mean(ours == labels):.4f}, onnxruntime accuracy {np.mean(theirs == labels):.4f}")
    print(f"same prediction on {int(np.sum(ours == theirs))}/{len(labels)} images; max relative logit difference {worst:.2e}")
    if sign_flips_allowed:
        print(f"{beyond} images beyond 1e-4 (sign flips near a threshold)")
        return 0 if np.array_equal(ours, theirs) else 1
    return 0 if np.array_equal(ours, theirs) and worst <= 1e-4 else 1


if __name__ == "__main__":
    arguments = [a for a in sys.argv[1:] if a != "--sign-flips-allowed"]
    if len(arguments) != 2:
        sys.exit("usage: evaluate_digits.py LIBRARY.so MODEL.onnx [--sign-flips-allowed]")
    try:
        sys.exit(main(arguments[0], arguments[1], "--sign-flips-allowed" in sys.argv[1:]))
    except slimtvm.SlimError as err:
        sys.exit(f"evaluate_digits: error: {err}")
