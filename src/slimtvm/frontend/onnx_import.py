"""ONNX → Relax: check the model, fix input shapes, import with TVM's ONNX frontend.

The result is a :class:`FrontendResult` holding the Relax ``IRModule`` (weights as constants),
the static input and output descriptions for the manifest, and warnings met on the way.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field

import onnx

from ..errors import SlimError, first_line
from .cancel_transposes import cancel_layout_transposes
from .col2im_patches import col2im_as_reshapes
from .conv1d_as_conv2d import conv1d_as_conv2d
from .conv_pads import merge_pads_into_convs
from .fold_shapes import fold_shape_computations
from .onnx_model import (
    TensorInfo,
    load_onnx,
    output_infos,
    resolve_input_infos,
    sums_as_adds,
    warn_nonfinite_weights,
    with_static_inputs,
)
from .qonnx_ops import lower_qonnx_ops


@dataclass
class FrontendResult:
    """What the frontend hands to the pass pipeline."""

    mod: object  # tvm.IRModule
    onnx_model: onnx.ModelProto  # with static input shapes and inferred shapes
    inputs: list
    outputs: list
    model_sha256: str
    warnings: list = field(default_factory=list)
    rewrites: dict = field(default_factory=dict)  # lossless ONNX rewrites before import: name -> count


def import_onnx(path_or_model, input_shapes: dict | None = None) -> FrontendResult:
    """Load, check and import an ONNX model into Relax with static input shapes.

    Refuses (``SlimError``): anything :func:`load_onnx` refuses, dynamic inputs without a shape in
    ``input_shapes``, operators TVM's ONNX frontend does not implement (all of them named), and
    import failures (the first line of TVM's message). Warns when weights hold NaN/Inf.
    """
    model = load_onnx(path_or_model)
    model_bytes = model.SerializeToString()
    model, bipolar_quants = lower_qonnx_ops(model)
    inputs = resolve_input_infos(model, input_shapes)
    nonfinite = warn_nonfinite_weights(model)
    static_model = sums_as_adds(with_static_inputs(model, inputs))
    static_model, shape_nodes, unfolded_shapes = fold_shape_computations(static_model)
    static_model, transpose_pairs = cancel_layout_transposes(static_model)
    static_model, conv_pads = merge_pads_into_convs(static_model)
    static_model, convs_1d = conv1d_as_conv2d(static_model)
    static_model, col2im_patches = col2im_as_reshapes(static_model)
    _refuse_unsupported_ops(static_model)
    mod = _relax_import(static_model, inputs)
    outputs = _relax_outputs(mod, output_infos(static_model), unfolded_shapes)
    notes = [f"weights with NaN/Inf: {name} ({count})" for name, count in nonfinite]
    counts = (
        ("qonnx_quantizers", bipolar_quants),
        ("shape_computations_folded", shape_nodes),
        ("layout_transpose_pairs_removed", transpose_pairs),
        ("pads_merged_into_convs", conv_pads),
        ("conv1d_as_conv2d", convs_1d),
        ("col2im_as_reshapes", col2im_patches),
    )
    rewrites = {name: count for name, count in counts if count}
    return FrontendResult(mod, static_model, inputs, outputs, hashlib.sha256(model_bytes).hexdigest(), notes, rewrites)


def _static_dim(dim):
    """An int for a static dimension, None for a data-dependent one."""
    try:
        return int(dim)
    except (TypeError, ValueError):
        return None


IMPORTED_WITHOUT_CONVERTER = {"If"}  # from_onnx builds these itself (relax.If), not from its converter map


def _refuse_unsupported_ops(model: onnx.ModelProto) -> None:
    from tvm.relax.frontend.onnx import onnx_frontend

    supported = set(onnx_frontend._get_convert_map()) | IMPORTED_WITHOUT_CONVERTER
    missing = sorted({node.op_type for node in model.graph.node if node.op_type not in supported})
    if missing:
        raise SlimError(f"TVM's ONNX frontend cannot import operator(s) {', '.join(missing)} used by the model")


def _relax_import(model: onnx.ModelProto, inputs: list):
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    from .pad_import import pad_as_relax_op

    shape_dict = {info.name: list(info.shape) for info in inputs}
    dtype_dict = {info.name: info.dtype for info in inputs}
    with warnings.catch_warnings():
        # the importer warns about every value_info without a shape; that is normal ONNX
        warnings.filterwarnings("ignore", message="Field 'shape' of 'type' is required")
        try:
            with pad_as_relax_op():
                mod = from_onnx(model, shape_dict=shape_dict, dtype_dict=dtype_dict)
        except tvm.error.OpNotImplemented as err:
            raise SlimError(f"TVM's ONNX frontend cannot import the model: {first_line(err)}") from None
        except Exception as err:
            raise SlimError(f"TVM's ONNX frontend failed to import the model: {type(err).__name__}: {first_line(err)}") from None
    return mod


def _relax_outputs(mod, onnx_outputs: list, unfolded_shapes: tuple = ()) -> list:
    """Output infos with the shapes Relax inferred (ONNX inference may leave some unknown). A
    data-dependent dimension (Slice by input values, NonZero, Unique, …) is None, an unknown rank
    a shape of None: the runtime returns whatever the library computed. Refuses outputs that are
    not tensors, naming the ``Shape`` nodes that did not fold (``unfolded_shapes``) if any."""
    from tvm import relax

    ret = mod["main"].ret_ty
    fields = list(ret.fields) if isinstance(ret, relax.TupleType) else [ret]
    if len(fields) != len(onnx_outputs):
        raise SlimError(f"imported model returns {len(fields)} tensors but the ONNX graph declares {len(onnx_outputs)} outputs")
    infos = []
    for info, sinfo in zip(onnx_outputs, fields):
        if not isinstance(sinfo, relax.TensorType):
            why = f"; shape computations that did not fold (input shape not static): {', '.join(unfolded_shapes[:3])}" if unfolded_shapes else ""
            raise SlimError(f"output {info.name!r} is not a tensor after import ({type(sinfo).__name__}){why}")
        shape = None if sinfo.shape is None or not hasattr(sinfo.shape, "values") else tuple(_static_dim(d) for d in sinfo.shape.values)
        infos.append(TensorInfo(info.name, shape, str(sinfo.dtype)))
    return infos
