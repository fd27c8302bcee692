"""Classify every held-out digit with a compiled artifact and with onnxruntime, and compare.

    python examples/evaluate_digits.py out/digits_cnn.so examples/digits_cnn.onnx

Prints both accuracies, how many predictions agree, and the largest relative logit difference.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import onnxruntime as ort

import slimtvm
from slimtvm.compiler.bench import relative_difference

HERE = os.path.dirname(os.path.abspath(__file__))


def main(library: str, onnx_path: str) -> int:
    model = slimtvm.load(library)
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    input_name = model.input_names[0]
    with np.load(os.path.join(HERE, "digits_test.npz")) as data:
        images, labels = data["images"], data["labels"]
    ours, theirs, worst = [], [], 0.0
    for image in images:
        batch = {input_name: image[None]}
        a = model.run(batch)[model.output_names[0]]
        b = session.run(None, batch)[0]
        worst = max(worst, relative_difference(a, b))
        ours.append(int(a.argmax()))
        theirs.append(int(b.argmax()))
    ours, theirs = np.array(ours), np.array(theirs)
    print(f"{len(labels)} test digits: slimtvm accuracy {np.mean(ours == labels):.4f}, onnxruntime accuracy {np.mean(theirs == labels):.4f}")
    print(f"same prediction on {int(np.sum(ours == theirs))}/{len(labels)} images; max relative logit difference {worst:.2e}")
    return 0 if np.array_equal(ours, theirs) and worst <= 1e-4 else 1


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: evaluate_digits.py LIBRARY.so MODEL.onnx")
    try:
        sys.exit(main(sys.argv[1], sys.argv[2]))
    except slimtvm.SlimError as err:
        sys.exit(f"evaluate_digits: error: {err}")
