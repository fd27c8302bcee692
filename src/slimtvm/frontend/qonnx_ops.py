"""QONNX's quantizer ops (Brevitas' ``export_qonnx``, the format FINN reads) as standard ONNX.

``BipolarQuant(x, scale)`` (domain ``qonnx.custom_op.general``) is ``scale · (x ≥ 0 ? +1 : −1)``
(QONNX maps 0 to +1, as slimtvm's binary kernels do). Rewritten exactly:

- on a constant (binary weights): the values, computed here with numpy;
- on an activation with a scalar scale read only by Conv / MatMul / Gemm layers (as their data
  input) with constant weights: ``Where(x ≥ 0, 1, −1)`` and the scale moved into those weights
  (linear: ``conv(s·b, W) = conv(b, s·W)``), so the binary-layer recognition sees a plain binarizer;
- otherwise: ``Where(x ≥ 0, 1, −1) · scale`` (float ops; any layer behind it stays float, and the
  compile report says why).

``Quant(x, scale, zero point, bit width)`` of 1 or 2 bits, computed as QONNX's executor does
(``y = (round(clip(x / s + z, min, max)) − z)·s``; a signed 1-bit Quant is bipolar):

- on a constant: the values, computed here with numpy (weights of ±s are binary weights);
- signed 1-bit with zero point 0 and a positive scale: exactly a BipolarQuant (above);
- otherwise as the float ops ``Div → [Add] → Clip → Round → [Sub] → Mul``. Unsigned 2-bit with
  zero point 0 is the form the k-bit kernel reads (``round(clip(x / s, 0, 3))·s``: activations as
  two bit planes); other forms keep their layers float, and the compile report says so.

A Quant of more than 2 bits, a rounding mode other than ROUND / HALF_EVEN / CEIL / FLOOR, or a
non-constant scale, zero point or bit width is refused in one line naming it: slimtvm has no
kernel for wider integer activations. Other ops of the QONNX domains are refused by name.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import SlimError
from .onnx_model import constant_arrays

QONNX_DOMAINS = ("qonnx.custom_op.general", "finn.custom_op.general")
LINEAR_OPS = {"Conv": 1, "MatMul": 1, "Gemm": 1}  # op -> index of its weight input


def lower_qonnx_ops(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """(``model`` with every BipolarQuant and Quant rewritten as standard ONNX, how many); ``model``
    itself when it has none. Refuses (SlimError) what the module docstring says."""
    nodes = [node for node in model.graph.node if node.domain in QONNX_DOMAINS]
    if not nodes:
        return model, 0
    for node in nodes:
        if node.op_type not in ("BipolarQuant", "Quant"):
            raise SlimError(f"QONNX op {node.op_type} (node {node.name or node.output[0]!r}) is not supported")
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    graph = rewritten.graph
    constants = constant_arrays(graph)
    originals = list(graph.node)
    quantizers = [index for index, node in enumerate(originals) if node.domain in QONNX_DOMAINS]
    replacement: dict = {}  # index of a BipolarQuant node -> the nodes replacing it
    quants = {index: IntQuant.of(originals[index], constants) for index in quantizers if originals[index].op_type == "Quant"}
    for index in quantizers:  # constants (weights) first, so that activation scales can move into them
        node = originals[index]
        scale = constants.get(node.input[1])
        if scale is None:
            raise SlimError(f"QONNX {node.op_type} {node.name or node.output[0]!r} has a scale that is not a constant")
        if node.input[0] in constants:
            source = constants[node.input[0]]
            values = quants[index].apply(source) if index in quants else np.where(source >= 0, 1.0, -1.0) * scale
            graph.initializer.append(numpy_helper.from_array(np.asarray(values, dtype=np.float32), node.output[0]))
            constants[node.output[0]] = np.asarray(values, dtype=np.float32)
            replacement[index] = []
    for index in quantizers:
        if index in replacement:
            continue
        if index in quants and not quants[index].is_bipolar:
            replacement[index] = quants[index].as_float_ops(graph, originals[index])
        else:
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


ROUNDING = {"ROUND": "Round", "HALF_EVEN": "Round", "CEIL": "Ceil", "FLOOR": "Floor"}


@dataclass(frozen=True)
class IntQuant:
    """A QONNX ``Quant`` node's constants: scale, zero point, bit width, signedness, narrow range
    and rounding, with the node's semantics (qonnx.custom_op.general.intquant.int_quant)."""

    scale: np.ndarray
    zero_point: np.ndarray
    bits: int
    signed: bool
    narrow: bool
    rounding: str

    @staticmethod
    def of(node, constants) -> IntQuant:
        """Read ``node``; refuses (SlimError) what :mod:`this module <slimtvm.frontend.qonnx_ops>` refuses."""
        label = node.name or node.output[0]
        values = [constants.get(name) if name else None for name in list(node.input[1:4]) + [""] * (4 - len(node.input))]
        if any(value is None for value in values[:3]):
            raise SlimError(f"QONNX Quant {label!r}: scale, zero point and bit width must be constants")
        scale, zero_point, bits = values[:3]
        width = float(np.asarray(bits).reshape(-1)[0])
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        rounding = attrs.get("rounding_mode", b"ROUND")
        rounding = (rounding.decode() if isinstance(rounding, bytes) else str(rounding)).upper()
        if width > 2 or width != int(width) or width < 1:
            raise SlimError(f"QONNX Quant {label!r} ({width:g}-bit) is not supported: slimtvm's kernels take 1- and 2-bit activations and weights")
        if rounding not in ROUNDING:
            raise SlimError(f"QONNX Quant {label!r}: rounding mode {rounding} is not supported (ROUND, HALF_EVEN, CEIL, FLOOR are)")
        return IntQuant(
            scale.astype(np.float32), zero_point.astype(np.float32), int(width), bool(attrs.get("signed", 1)), bool(attrs.get("narrow", 0)), rounding
        )

    @property
    def bounds(self) -> tuple:
        low = -(2 ** (self.bits - 1)) + int(self.narrow) if self.signed else 0
        high = 2 ** (self.bits - 1) - 1 if self.signed else 2**self.bits - 1 - int(self.narrow)
        return float(low), float(high)

    @property
    def is_bipolar(self) -> bool:
        """A signed 1-bit Quant with zero point 0 and positive scales: BipolarQuant's values."""
        return self.bits == 1 and self.signed and not np.any(self.zero_point) and bool(np.all(self.scale > 0))

    def apply(self, x: np.ndarray) -> np.ndarray:
        """The node's output for a constant input, as QONNX's executor computes it."""
        y = x.astype(np.float32) / self.scale + self.zero_point
        if self.bits == 1 and self.signed:
            y = np.where(y >= 0, 1.0, -1.0).astype(np.float32)
        else:
            low, high = self.bounds
            y = {"Round": np.round, "Ceil": np.ceil, "Floor": np.floor}[ROUNDING[self.rounding]](np.clip(y, low, high))
        return ((y - self.zero_point) * self.scale).astype(np.float32)

    def as_float_ops(self, graph, node) -> list:
        """Standard ONNX nodes computing ``node`` (not bipolar): Div → [Add] → Clip → Round → [Sub] → Mul."""
        if self.bits == 1 and self.signed:
            raise SlimError(f"QONNX Quant {node.name or node.output[0]!r}: a signed 1-bit Quant needs zero point 0 and positive scales")
        prefix = f"{node.output[0]}__slimtvm_quant"
        low, high = self.bounds
        constants = {"scale": self.scale, "zero": self.zero_point, "low": np.float32(low), "high": np.float32(high)}
        graph.initializer.extend(numpy_helper.from_array(np.asarray(v, dtype=np.float32), f"{prefix}_{k}") for k, v in constants.items())
        shifted = bool(np.any(self.zero_point))
        steps = [("Div", [node.input[0], f"{prefix}_scale"])]
        if shifted:
            steps.append(("Add", [None, f"{prefix}_zero"]))
        steps += [("Clip", [None, f"{prefix}_low", f"{prefix}_high"]), (ROUNDING[self.rounding], [None])]
        if shifted:
            steps.append(("Sub", [None, f"{prefix}_zero"]))
        steps.append(("Mul", [None, f"{prefix}_scale"]))
        nodes, previous = [], None
        for position, (op, inputs) in enumerate(steps):
            out = node.output[0] if position == len(steps) - 1 else f"{prefix}_{position}"
            nodes.append(helper.make_node(op, [previous if name is None else name for name in inputs], [out], name=f"{prefix}_{op.lower()}{position}"))
            previous = out
        return nodes


def _activation_binarizer(graph, node, constants) -> list:
    """The standard nodes computing ``node`` (a BipolarQuant of an activation, or a Quant with its
    values); a Quant's zero point and bit width inputs are ignored (0 and 1 by then)."""
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
