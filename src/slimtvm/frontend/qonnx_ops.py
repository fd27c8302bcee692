"""QONNX's quantizer ops (Brevitas' ``export_qonnx``, the format FINN reads) as standard ONNX.

``BipolarQuant(x, scale)`` (domain ``qonnx.custom_op.general``) is ``scale · (x ≥ 0 ? +1 : −1)``
(QONNX maps 0 to +1, as slimtvm's binary kernels do). Rewritten exactly:

- on a constant (binary weights): the values, computed here with numpy;
- on an activation with a scalar scale read only by Conv / MatMul / Gemm layers (as their data
  input) with constant weights: ``Where(x ≥ 0, 1, −1)`` and the scale moved into those weights
  (linear: ``conv(s·b, W) = conv(b, s·W)``), so the binary-layer recognition sees a plain binarizer;
- otherwise: ``Where(x ≥ 0, 1, −1) · scale`` (float ops; any layer behind it stays float, and the
  compile report says why).

``Quant`` (integer quantization of any bit width) is refused with one line naming its bit width:
slimtvm's kernels take ±1 (BipolarQuant) activations and weights; a k-bit ``Quant`` has no kernel
yet. Other ops of the QONNX domains are refused by name.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import SlimError

QONNX_DOMAINS = ("qonnx.custom_op.general", "finn.custom_op.general")
LINEAR_OPS = {"Conv": 1, "MatMul": 1, "Gemm": 1}  # op -> index of its weight input


def lower_qonnx_ops(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """(``model`` with every BipolarQuant rewritten as standard ONNX, how many); ``model`` itself
    when it has none. Refuses (SlimError) ``Quant`` and other QONNX ops, and a BipolarQuant whose
    scale is not a constant."""
    nodes = [node for node in model.graph.node if node.domain in QONNX_DOMAINS]
    if not nodes:
        return model, 0
    for node in nodes:
        if node.op_type == "Quant":
            bits = _constant(model.graph, node.input[3]) if len(node.input) > 3 else None
            width = f"{float(np.asarray(bits).reshape(-1)[0]):g}-bit" if bits is not None else "non-constant bit width"
            raise SlimError(f"QONNX Quant node {node.name or node.output[0]!r} ({width}) is not supported: slimtvm takes BipolarQuant (±1) binarized layers")
        if node.op_type != "BipolarQuant":
            raise SlimError(f"QONNX op {node.op_type} (node {node.name or node.output[0]!r}) is not supported")
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    graph = rewritten.graph
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    originals = list(graph.node)
    quantizers = [index for index, node in enumerate(originals) if node.domain in QONNX_DOMAINS]
    replacement: dict = {}  # index of a BipolarQuant node -> the nodes replacing it
    for index in quantizers:  # binary weights first, so that activation scales can move into them
        node = originals[index]
        scale = constants.get(node.input[1])
        if scale is None:
            raise SlimError(f"QONNX BipolarQuant {node.name or node.output[0]!r} has a scale that is not a constant")
        if node.input[0] in constants:
            values = (np.where(constants[node.input[0]] >= 0, 1.0, -1.0) * scale).astype(np.float32)
            graph.initializer.append(numpy_helper.from_array(values, node.output[0]))
            constants[node.output[0]] = values
            replacement[index] = []
    for index in quantizers:
        if index not in replacement:
            replacement[index] = _activation_binarizer(graph, originals[index], constants)
    nodes = []
    for index, node in enumerate(originals):
        nodes.extend(replacement.get(index, [node]))
    del graph.node[:]
    graph.node.extend(nodes)
    kept = [entry for entry in rewritten.opset_import if entry.domain not in QONNX_DOMAINS]
    del rewritten.opset_import[:]
    rewritten.opset_import.extend(kept)
    return rewritten, len(replacement)


def _constant(graph, name):
    for init in graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    return None


def _activation_binarizer(graph, node, constants) -> list:
    """The standard nodes computing ``node`` (a BipolarQuant of an activation)."""
    source, out = node.input[0], node.output[0]
    scale = constants[node.input[1]].astype(np.float32)
    prefix = f"{out}__slimtvm_bipolar"
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(0.0, dtype=np.float32), f"{prefix}_zero"),
            numpy_helper.from_array(np.array(1.0, dtype=np.float32), f"{prefix}_plus"),
            numpy_helper.from_array(np.array(-1.0, dtype=np.float32), f"{prefix}_minus"),
        ]
    )
    condition = helper.make_node("GreaterOrEqual", [source, f"{prefix}_zero"], [f"{prefix}_ge"], name=f"{prefix}_ge")
    readers = [n for n in graph.node if out in n.input]
    outputs = {value.name for value in graph.output}
    movable = scale.size == 1 and out not in outputs and readers and all(_scale_moves_into(reader, out, constants) for reader in readers)
    if scale.size == 1 and float(scale.reshape(-1)[0]) == 1.0 or movable:
        if movable and float(scale.reshape(-1)[0]) != 1.0:
            for reader in readers:
                _scale_weights(graph, reader, float(scale.reshape(-1)[0]), constants)
        return [condition, helper.make_node("Where", [f"{prefix}_ge", f"{prefix}_plus", f"{prefix}_minus"], [out], name=f"{prefix}_where")]
    graph.initializer.append(numpy_helper.from_array(scale, f"{prefix}_scale"))
    signs = helper.make_node("Where", [f"{prefix}_ge", f"{prefix}_plus", f"{prefix}_minus"], [f"{prefix}_signs"], name=f"{prefix}_where")
    return [condition, signs, helper.make_node("Mul", [f"{prefix}_signs", f"{prefix}_scale"], [out], name=f"{prefix}_scaled")]


def _scale_moves_into(reader, value: str, constants) -> bool:
    """Whether ``reader`` is a linear layer reading ``value`` as its data input, with constant weights."""
    if reader.op_type not in LINEAR_OPS or reader.input[0] != value or value in reader.input[1:]:
        return False
    if reader.op_type == "Gemm" and any(a.name == "transA" and a.i for a in reader.attribute):
        return False
    return reader.input[LINEAR_OPS[reader.op_type]] in constants


def _scale_weights(graph, reader, scale: float, constants) -> None:
    """Point ``reader`` at a new initializer holding its weights times ``scale``."""
    weight_name = reader.input[LINEAR_OPS[reader.op_type]]
    scaled = (constants[weight_name].astype(np.float32) * np.float32(scale)).astype(np.float32)
    name = f"{weight_name}__slimtvm_times_{reader.output[0]}"
    graph.initializer.append(numpy_helper.from_array(scaled, name))
    constants[name] = scaled
    reader.input[LINEAR_OPS[reader.op_type]] = name
