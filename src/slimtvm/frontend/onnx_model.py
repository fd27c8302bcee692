"""Load and check an ONNX model: the file, the graph, its inputs, shapes and weights.

Everything here needs only the ``onnx`` package, so ``slimtvm inspect`` and input validation
run without TVM.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import SlimError, first_line
from .shape_inference import infer_shapes

ONNX_TO_NUMPY = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.DOUBLE: "float64",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.INT16: "int16",
    onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.UINT64: "uint64",
    onnx.TensorProto.UINT32: "uint32",
    onnx.TensorProto.UINT16: "uint16",
    onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.BOOL: "bool",
}


@dataclass(frozen=True)
class TensorInfo:
    """Name, shape and numpy dtype of a graph input or output. Inputs have static shapes; an
    output's data-dependent dimension is None, and its shape None when even the rank is unknown."""

    name: str
    shape: tuple | None
    dtype: str

    def to_json(self) -> dict:
        return {"name": self.name, "shape": None if self.shape is None else list(self.shape), "dtype": self.dtype}


def load_onnx(path_or_model) -> onnx.ModelProto:
    """Read an ONNX model from a path (or accept a ``ModelProto``) and check it.

    Refuses a missing file, a directory, a file that is not a parseable ONNX model (truncated,
    another format), a model of an ONNX opset newer than the onnx package knows (its operators'
    meaning cannot be checked) and a model that fails ``onnx.checker``.
    """
    if isinstance(path_or_model, onnx.ModelProto):
        model = path_or_model
        where = "the given model"
    else:
        path = os.fspath(path_or_model)
        where = path
        if not os.path.exists(path):
            raise SlimError(f"model file not found: {path}")
        if os.path.isdir(path):
            raise SlimError(f"model path is a directory, not an ONNX file: {path}")
        try:
            model = onnx.load(path)
        except Exception as err:
            raise SlimError(f"{path} is not a readable ONNX model (truncated or another format): {first_line(err)}") from None
        if len(model.graph.node) == 0 and len(model.graph.output) == 0:
            # protobuf accepts many byte strings as an empty message; an ONNX model has outputs
            raise SlimError(f"{path} is not an ONNX model: it decodes to an empty graph")
    newest = onnx.defs.onnx_opset_version()
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx") and opset.version > newest:
            raise SlimError(f"{where} uses ONNX opset {opset.version}; the onnx package here knows opsets up to {newest}: export with opset ≤ {newest}")
    try:
        onnx.checker.check_model(model)
    except Exception as err:
        # A tensor type without a shape (common for graph outputs) is accepted by onnxruntime and
        # TVM; shapes are inferred later. Every other checker complaint is fatal.
        if "Field 'shape' of 'type' is required but missing" not in str(err):
            raise SlimError(f"{where} fails the ONNX checker: {first_line(err)}") from None
    return model


def graph_inputs(model: onnx.ModelProto) -> list:
    """The model's real inputs: graph inputs that are not initializers (old exporters list both)."""
    initializers = {init.name for init in model.graph.initializer}
    return [value for value in model.graph.input if value.name not in initializers]


def _dims(value_info) -> list:
    """Dimensions as ints, with a symbolic or unknown dimension as its name (or ``"?"``)."""
    dims = []
    for dim in value_info.type.tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        elif dim.HasField("dim_param"):
            dims.append(dim.dim_param)
        else:
            dims.append("?")
    return dims


def _dtype(value_info) -> str:
    elem = value_info.type.tensor_type.elem_type
    if elem not in ONNX_TO_NUMPY:
        raise SlimError(f"tensor {value_info.name!r} has element type {onnx.TensorProto.DataType.Name(elem)}, which slimtvm does not support")
    return ONNX_TO_NUMPY[elem]


def parse_shape_overrides(specs) -> dict:
    """Parse ``NAME=1,3,224,224`` strings into ``{name: (1, 3, 224, 224)}``; refuses malformed ones."""
    shapes = {}
    for spec in specs or ():
        name, sep, dims = str(spec).rpartition("=")
        if not sep or not name:
            raise SlimError(f"--input-shape {spec!r} is malformed: expected NAME=D1,D2,... (e.g. x=1,3,224,224)")
        try:
            shape = tuple(int(d) for d in dims.split(",") if d.strip() != "")
        except ValueError:
            raise SlimError(f"--input-shape {spec!r} is malformed: dimensions must be integers") from None
        if not shape or any(d <= 0 for d in shape):
            raise SlimError(f"--input-shape {spec!r} is malformed: dimensions must be positive integers")
        if name in shapes:
            raise SlimError(f"--input-shape is given twice for input {name!r}")
        shapes[name] = shape
    return shapes


def resolve_input_infos(model: onnx.ModelProto, shape_overrides: dict | None = None) -> list:
    """Static shapes and dtypes of the model's inputs, taking ``shape_overrides`` into account.

    Refuses an override naming an input the model does not have, an override whose rank or fixed
    dimensions contradict the model, and any input with a dynamic dimension left unspecified.
    """
    overrides = dict(shape_overrides or {})
    inputs = graph_inputs(model)
    names = [value.name for value in inputs]
    unknown = [name for name in overrides if name not in names]
    if unknown:
        raise SlimError(f"--input-shape names {unknown[0]!r}, which is not an input of the model (inputs: {', '.join(names)})")
    infos = []
    for value in inputs:
        dims = _dims(value)
        if value.name in overrides:
            shape = overrides[value.name]
            if dims and len(dims) != len(shape):
                raise SlimError(f"--input-shape for {value.name!r} has rank {len(shape)}, the model's input has rank {len(dims)} {dims}")
            for want, have in zip(shape, dims):
                if isinstance(have, int) and have != want:
                    raise SlimError(f"--input-shape for {value.name!r} is {list(shape)}, but the model fixes it to {dims}")
        else:
            dynamic = [d for d in dims if not isinstance(d, int) or d <= 0]
            if dynamic or not value.type.tensor_type.HasField("shape"):
                raise SlimError(
                    f"input {value.name!r} has dynamic dimensions {dims}: give its shape with --input-shape {value.name}="
                    + ",".join(str(d) if isinstance(d, int) and d > 0 else "N" for d in dims)
                )
            shape = tuple(dims)
        infos.append(TensorInfo(value.name, tuple(int(d) for d in shape), _dtype(value)))
    return infos


def with_static_inputs(model: onnx.ModelProto, inputs: list) -> onnx.ModelProto:
    """A copy of ``model`` whose inputs have the static shapes of ``inputs``, shapes inferred."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    by_name = {info.name: info for info in inputs}
    for value in fixed.graph.input:
        if value.name in by_name:
            shape = value.type.tensor_type.shape
            del shape.dim[:]
            for d in by_name[value.name].shape:
                shape.dim.add().dim_value = d
    try:
        return infer_shapes(fixed, strict_mode=False, data_prop=True)
    except Exception as err:
        raise SlimError(f"ONNX shape inference fails on the model with inputs {[i.to_json() for i in inputs]}: {first_line(err)}") from None


def constant_arrays(graph) -> dict:
    """name -> numpy array of every initializer and ``Constant`` node output of ``graph``."""
    found = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    found[node.output[0]] = numpy_helper.to_array(attr.t)
    return found


def readers_by_value(graph) -> dict:
    """name -> the nodes of ``graph`` that read that value (a node reading it twice, twice)."""
    readers: dict = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    return readers


def output_infos(model: onnx.ModelProto) -> list:
    """Names, shapes (where inferred; else ``"?"`` entries) and dtypes of the graph outputs."""
    return [TensorInfo(value.name, tuple(_dims(value)), _dtype(value)) for value in model.graph.output]


def nonfinite_weights(model: onnx.ModelProto) -> list:
    """Names of initializers and Constant nodes that hold NaN or Inf values, with counts.

    A one-value ±∞ constant is not listed: exporters fill masked attention scores with it
    (torch's ``Where(mask, 0, -inf)`` before a Softmax), on purpose."""
    found = []
    for name, array in constant_arrays(model.graph).items():
        if array.size == 1 and np.isinf(array).all():
            continue
        if np.issubdtype(array.dtype, np.floating):
            bad = int(np.count_nonzero(~np.isfinite(array)))
            if bad:
                found.append((name, bad))
    return found


def warn_nonfinite_weights(model: onnx.ModelProto) -> list:
    """Emit one warning naming the weights that hold NaN/Inf; returns what :func:`nonfinite_weights` found."""
    found = nonfinite_weights(model)
    if found:
        listed = ", ".join(f"{name} ({count})" for name, count in found[:5])
        more = f" and {len(found) - 5} more" if len(found) > 5 else ""
        warnings.warn(
            f"model weights contain NaN/Inf values: {listed}{more}; compiled as given: they propagate into the outputs as in onnxruntime (NaN/Inf where its outputs have them)",
            stacklevel=2,
        )
    return found


def sums_as_adds(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy where every multi-input ``Sum`` is a left-to-right chain of ``Add`` nodes.

    Exact: Sum and Add broadcast alike and the chain adds in Sum's order. TVM's importer turns Sum
    into ``stack`` + ``sum`` over a new axis, which copies every input into a 5-D tensor and
    stops ``ConvertLayout`` (residual blocks in ResNet-50 exports are Sums).
    """
    if not any(node.op_type == "Sum" and len(node.input) > 1 for node in model.graph.node):
        return model
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    nodes = []
    for node in rewritten.graph.node:
        if node.op_type != "Sum" or len(node.input) < 2:
            nodes.append(node)
            continue
        current = node.input[0]
        for position, operand in enumerate(node.input[1:], start=1):
            last = position == len(node.input) - 1
            out = node.output[0] if last else f"{node.output[0]}__slimtvm_partial_sum{position}"
            nodes.append(onnx.helper.make_node("Add", [current, operand], [out], name=f"{node.name or node.output[0]}__add{position}"))
            current = out
    del rewritten.graph.node[:]
    rewritten.graph.node.extend(nodes)
    return rewritten
