"""Helpers for the onnx package's light model zoo: logits as an extra output, random weights."""

from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import numpy_helper

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


def with_logits_output(model: onnx.ModelProto) -> tuple:
    """A copy that also outputs the input of the final Softmax (the logits), and that name."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    softmax = [node for node in copy.graph.node if node.op_type == "Softmax"]
    if not softmax:
        return copy, None
    logits = softmax[-1].input[0]
    copy.graph.output.append(onnx.helper.make_tensor_value_info(logits, onnx.TensorProto.FLOAT, None))
    return copy, logits


def with_random_weights(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """Replace every constant-filled weight (ConstantOfShape of an initializer shape) by random values."""
    rng = np.random.default_rng(seed)
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    shapes = {init.name: numpy_helper.to_array(init) for init in copy.graph.initializer}
    bn_roles = {}
    for node in copy.graph.node:
        if node.op_type == "BatchNormalization":
            bn_roles.update({node.input[1]: "scale", node.input[2]: "shift", node.input[3]: "mean", node.input[4]: "var"})
    kept = []
    for node in copy.graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in shapes:
            shape = tuple(int(d) for d in shapes[node.input[0]])
            name = node.output[0]
            role = bn_roles.get(name)
            if role == "var":
                value = rng.uniform(0.5, 2.0, shape)
            elif role == "scale":
                value = rng.uniform(0.5, 1.5, shape)
            elif len(shape) >= 2:
                value = rng.normal(0.0, np.sqrt(2.0 / max(1, int(np.prod(shape[1:])))), shape)
            else:
                value = rng.normal(0.0, 0.1, shape)
            copy.graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), name))
            if copy.ir_version < 4:  # IR v3: every initializer must also be a graph input
                copy.graph.input.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, list(shape)))
        else:
            kept.append(node)
    del copy.graph.node[:]
    copy.graph.node.extend(kept)
    return copy
