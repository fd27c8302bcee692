"""``--binarize weights|weights+activations``: turn float layers into BWN or XNOR-Net form (lossy).

On the ONNX graph, before compilation: every Conv, Gemm and MatMul with constant weights — except
the layers kept float (by default the first and the last such layer, as BNN practice keeps them) —
gets weights ``α_c · sign(W)`` with ``α_c = mean |W|`` over output channel ``c`` (XNOR-Net), and
with ``weights+activations`` also a binarized input, ``Where(x < 0, −1, 1)`` (slimtvm's sign, so
exact zeros — frequent after a ReLU — need no special case). slimtvm's exact detection then compiles
those layers to bitserial kernels (weights-only layers keep a float input: the BWN case).

The error is measured with onnxruntime on calibration inputs (seeded normal inputs unless given):
for every binarized layer, the relative L2 error of its output against the float model's (errors
of earlier layers included, i.e. what the network sees there), and for the model's outputs the
relative error, cosine similarity and top-1 agreement. Refuses: an unknown mode, names in
``keep_float`` that are not layers of the model, a model without a layer to binarize.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from ..errors import SlimError

MODES = ("weights", "weights+activations")
LINEAR_OPS = ("Conv", "Gemm", "MatMul")


@dataclass
class LayerError:
    name: str
    op: str
    relative_error: float


@dataclass
class BinarizeRequestReport:
    mode: str
    binarized: list = field(default_factory=list)  # LayerError per binarized layer, graph order
    kept_float: list = field(default_factory=list)  # names
    output_relative_error: float = 0.0
    output_cosine: float = 1.0
    top1_agreement: str = ""
    calibration_inputs: int = 0

    def to_json(self) -> dict:
        return {
            "mode": self.mode,
            "layers": [{"name": e.name, "op": e.op, "relative_error": e.relative_error} for e in self.binarized],
            "kept_float": self.kept_float,
            "output_relative_error": self.output_relative_error,
            "output_cosine": self.output_cosine,
            "top1_agreement": self.top1_agreement,
            "calibration_inputs": self.calibration_inputs,
        }


def _weight_layers(model: onnx.ModelProto) -> list:
    """(node, weight initializer, output-channel axis) of each linear layer with constant weights."""
    initializers = {init.name: init for init in model.graph.initializer}
    layers = []
    for node in model.graph.node:
        if node.op_type not in LINEAR_OPS or len(node.input) < 2 or node.input[1] not in initializers:
            continue
        weight = initializers[node.input[1]]
        if node.op_type == "Conv":
            axis = 0
        elif node.op_type == "Gemm":
            trans_b = next((onnx.helper.get_attribute_value(a) for a in node.attribute if a.name == "transB"), 0)
            axis = 0 if trans_b else 1
        else:
            axis = len(weight.dims) - 1
        if len(weight.dims) >= 2:
            layers.append((node, weight, axis))
    return layers


def _layer_name(node) -> str:
    return node.name or node.output[0]


def binarize_model(model: onnx.ModelProto, mode: str, keep_float=("first", "last")) -> tuple:
    """(binarized copy of ``model``, [(name, op) binarized], [names kept float]); see module doc."""
    if mode not in MODES:
        raise SlimError(f"--binarize must be one of {', '.join(MODES)}, not {mode!r}")
    model = onnx.ModelProto.FromString(model.SerializeToString())
    layers = _weight_layers(model)
    if not layers:
        raise SlimError("--binarize: the model has no Conv, Gemm or MatMul layer with constant weights")
    names = [_layer_name(node) for node, _, _ in layers]
    keep = set()
    for item in keep_float:
        if item == "first":
            keep.add(names[0])
        elif item == "last":
            keep.add(names[-1])
        elif item in names:
            keep.add(item)
        elif item != "none":
            raise SlimError(
                f"--keep-float: {item!r} is not a Conv/Gemm/MatMul layer with constant weights of this model (layers: {', '.join(names[:8])}{', …' if len(names) > 8 else ''})"
            )
    users = {}
    for node in model.graph.node:
        for name in node.input:
            users[name] = users.get(name, 0) + 1
    binarized, new_nodes = [], []
    weight_layers = {id(node): (weight, axis) for node, weight, axis in layers}
    for node in model.graph.node:
        entry = weight_layers.get(id(node))
        if entry is not None and _layer_name(node) not in keep:
            weight, axis = entry
            values = numpy_helper.to_array(weight).astype(np.float32)
            moved = np.moveaxis(values, axis, 0)
            alpha = np.abs(moved.reshape(moved.shape[0], -1)).mean(axis=1)
            alpha = np.where(alpha > 0, alpha, np.float32(1e-8)).astype(np.float32)
            signs = np.where(moved >= 0, 1.0, -1.0).astype(np.float32)
            binary = np.moveaxis(signs * alpha.reshape((-1,) + (1,) * (moved.ndim - 1)), 0, axis).astype(np.float32)
            if users.get(weight.name, 0) > 1:  # shared weight: give this layer its own copy
                weight = model.graph.initializer.add()
                weight.name = f"{node.input[1]}__binary_{len(binarized)}"
                node.input[1] = weight.name
            weight.CopyFrom(numpy_helper.from_array(binary, weight.name))
            if mode == "weights+activations":
                new_nodes.extend(_sign_nodes(model, node, len(binarized)))
            binarized.append((_layer_name(node), node.op_type))
        new_nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(new_nodes)
    return model, binarized, sorted(keep, key=names.index)


def _sign_nodes(model: onnx.ModelProto, node, index: int) -> list:
    """Nodes computing ``where(x < 0, −1, 1)`` of ``node``'s input (slimtvm's sign: 0 → +1, so the
    compiled model and onnxruntime agree even on exact zeros, e.g. after a ReLU; ``Less`` and
    ``Where`` exist from opset 9); rewires ``node``."""
    prefix = f"{_layer_name(node)}/binarize_input"
    names = {value: f"{prefix}/{value}" for value in ("zero", "one", "minus_one")}
    for value, number in (("zero", 0.0), ("one", 1.0), ("minus_one", -1.0)):
        model.graph.initializer.append(numpy_helper.from_array(np.array(number, dtype=np.float32), names[value]))
    condition, out = f"{prefix}/negative", f"{prefix}/sign"
    nodes = [
        onnx.helper.make_node("Less", [node.input[0], names["zero"]], [condition], name=condition),
        onnx.helper.make_node("Where", [condition, names["minus_one"], names["one"]], [out], name=out),
    ]
    node.input[0] = out
    return nodes


def _onnxruntime_outputs(model: onnx.ModelProto, inputs: dict, names: list) -> dict:
    try:
        import onnxruntime as ort
    except ImportError:
        raise SlimError("--binarize reports its error with onnxruntime: pip install onnxruntime (or slimtvm's [bench] extra)") from None
    probe = onnx.ModelProto.FromString(model.SerializeToString())
    existing = {o.name for o in probe.graph.output}
    for name in names:
        if name not in existing:
            probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, inputs)))


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    scale = float(np.linalg.norm(b.astype(np.float64)))
    return float(np.linalg.norm((a - b).astype(np.float64)) / scale) if scale else float(np.linalg.norm(a))


def measure_error(original: onnx.ModelProto, binarized: onnx.ModelProto, layers: list, calibration: list, mode: str, kept: list) -> BinarizeRequestReport:
    """Per-layer and output error of ``binarized`` against ``original`` on ``calibration`` inputs."""
    nodes = {(_layer_name(n)): n for n in binarized.graph.node}
    layer_outputs = [nodes[name].output[0] for name, _ in layers]
    model_outputs = [o.name for o in original.graph.output]
    errors = {name: [] for name, _ in layers}
    out_errors, cosines, agree = [], [], 0
    for inputs in calibration:
        ours = _onnxruntime_outputs(binarized, inputs, layer_outputs)
        reference = _onnxruntime_outputs(original, inputs, layer_outputs)
        for (name, _), tensor in zip(layers, layer_outputs):
            errors[name].append(_relative(ours[tensor], reference[tensor]))
        first = model_outputs[0]
        out_errors.append(max(_relative(ours[o], reference[o]) for o in model_outputs))
        a, b = ours[first].astype(np.float64).ravel(), reference[first].astype(np.float64).ravel()
        norms = np.linalg.norm(a) * np.linalg.norm(b)
        cosines.append(float(a @ b / norms) if norms else 1.0)
        agree += int(np.argmax(ours[first]) == np.argmax(reference[first]))
    report = BinarizeRequestReport(mode, kept_float=kept, calibration_inputs=len(calibration))
    report.binarized = [LayerError(name, op, float(np.mean(errors[name]))) for name, op in layers]
    report.output_relative_error = float(np.mean(out_errors))
    report.output_cosine = float(np.min(cosines))
    report.top1_agreement = f"{agree}/{len(calibration)}"
    return report


def _samples(array: np.ndarray, info, path) -> list:
    shape = tuple(info.shape)
    if array.shape == shape:
        return [array]
    if array.ndim == len(shape) + 1 and array.shape[1:] == shape:
        return list(array)
    if array.ndim == len(shape) and array.shape[1:] == shape[1:] and array.shape[0] % shape[0] == 0:
        return list(array.reshape((-1,) + shape))
    raise SlimError(f"--calibration {path}: array {info.name!r} has shape {list(array.shape)}, which is not samples of the input shape {list(shape)}")


def calibration_inputs(model: onnx.ModelProto, input_infos: list, count: int = 8, path: str | None = None) -> list:
    """Calibration feeds: the arrays of an .npz file (one per input name; samples stacked on a new
    first axis, or along the batch axis) or ``count`` seeded normal samples."""
    if path is not None:
        from ..runtime.npz_files import load_npz

        arrays = load_npz(path, "--calibration")
        for info in input_infos:
            if info.name not in arrays:
                raise SlimError(f"--calibration {path}: no array named {info.name!r} (the model's input)")
        return [
            {info.name: sample.astype(info.dtype) for info, sample in zip(input_infos, group)}
            for group in zip(*(_samples(arrays[info.name], info, path) for info in input_infos))
        ]
    rng = np.random.default_rng(0)
    return [{info.name: rng.standard_normal(info.shape).astype(info.dtype) for info in input_infos} for _ in range(count)]


@dataclass
class BinarizeRequest:
    """What ``--binarize`` asked for."""

    mode: str
    keep_float: tuple = ("first", "last")
    calibration: str | None = None  # .npz path; None: seeded normal inputs
    calibration_count: int = 8


def apply_request(model, request: BinarizeRequest, input_shapes: dict | None = None) -> tuple:
    """(binarized static-shape ModelProto, BinarizeRequestReport) for ``model`` (path or proto)."""
    from ..frontend.onnx_model import load_onnx, resolve_input_infos, with_static_inputs

    original = load_onnx(model)
    infos = resolve_input_infos(original, input_shapes)
    static = with_static_inputs(original, infos)
    binarized, layers, kept = binarize_model(static, request.mode, request.keep_float)
    if not layers:
        raise SlimError("--binarize: every Conv/Gemm/MatMul layer is kept float (--keep-float); nothing to binarize")
    feeds = calibration_inputs(static, infos, request.calibration_count, request.calibration)
    return binarized, measure_error(static, binarized, layers, feeds, request.mode, kept)


def describe(report: dict) -> list:
    """Human-readable lines of a report's JSON form (the manifest's ``binarize_request``)."""
    lines = [f"binarize on request ({report['mode']}): {len(report['layers'])} layers binarized, kept float: {', '.join(report['kept_float']) or 'none'}"]
    lines += [f"  {e['name']} ({e['op']}): relative error of its output {e['relative_error']:.3f}" for e in report["layers"]]
    lines.append(
        f"  model output on {report['calibration_inputs']} calibration inputs: relative error {report['output_relative_error']:.3f}, "
        f"cosine ≥ {report['output_cosine']:.4f}, top-1 agreement {report['top1_agreement']} (lossy: retrain or fine-tune to recover accuracy)"
    )
    return lines
