"""What a lossy rewrite costs, measured with onnxruntime on calibration inputs.

For every rewritten layer: the relative L2 error of its output against the float model's (the
errors of earlier layers included, i.e. what the network sees there); for the model's outputs: the
relative error, the cosine similarity and the top-1 agreement. Calibration inputs are the arrays of
an .npz file, or seeded normal samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from ..errors import SlimError
from .weight_layers import layer_name


@dataclass
class LayerError:
    name: str
    op: str
    relative_error: float


@dataclass
class LossyReport:
    """One lossy rewrite's error: ``mode`` says what was done (e.g. ``weights+activations``, or
    ``90% of weights, global``), ``layers`` the rewritten ones with their error."""

    mode: str
    layers: list = field(default_factory=list)  # LayerError per rewritten layer, graph order
    kept_float: list = field(default_factory=list)  # names
    output_relative_error: float = 0.0
    output_cosine: float = 1.0
    top1_agreement: str = ""
    calibration_inputs: int = 0
    extra: dict = field(default_factory=dict)  # rewrite-specific figures (e.g. the share of zero weights)

    def to_json(self) -> dict:
        return {
            "mode": self.mode,
            "layers": [{"name": e.name, "op": e.op, "relative_error": e.relative_error} for e in self.layers],
            "kept_float": self.kept_float,
            "output_relative_error": self.output_relative_error,
            "output_cosine": self.output_cosine,
            "top1_agreement": self.top1_agreement,
            "calibration_inputs": self.calibration_inputs,
            **self.extra,
        }


def onnxruntime_runs(model: onnx.ModelProto, calibration: list, names: list, flag: str = "--binarize") -> list:
    """For each feed dict of ``calibration``: the model's outputs and the tensors ``names``, from
    one onnxruntime session."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise SlimError(f"{flag} reports its error with onnxruntime: pip install onnxruntime (or slimtvm's [bench] extra)") from None
    probe = onnx.ModelProto.FromString(model.SerializeToString())
    existing = {o.name for o in probe.graph.output}
    for name in names:
        if name not in existing:
            probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]
    return [dict(zip(outputs, session.run(None, inputs))) for inputs in calibration]


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    scale = float(np.linalg.norm(b.astype(np.float64)))
    return float(np.linalg.norm((a - b).astype(np.float64)) / scale) if scale else float(np.linalg.norm(a))


def measure_error(
    original: onnx.ModelProto, rewritten: onnx.ModelProto, layers: list, calibration: list, mode: str, kept: list, flag: str = "--binarize"
) -> LossyReport:
    """Per-layer (``layers``: (name, op) pairs) and output error of ``rewritten`` against
    ``original`` on ``calibration`` inputs."""
    nodes = {layer_name(n): n for n in rewritten.graph.node}
    layer_outputs = [nodes[name].output[0] for name, _ in layers]
    model_outputs = [o.name for o in original.graph.output]
    errors = {name: [] for name, _ in layers}
    out_errors, cosines, agree = [], [], 0
    for ours, reference in zip(onnxruntime_runs(rewritten, calibration, layer_outputs, flag), onnxruntime_runs(original, calibration, layer_outputs, flag)):
        for (name, _), tensor in zip(layers, layer_outputs):
            errors[name].append(_relative(ours[tensor], reference[tensor]))
        first = model_outputs[0]
        out_errors.append(max(_relative(ours[o], reference[o]) for o in model_outputs))
        a, b = ours[first].astype(np.float64).ravel(), reference[first].astype(np.float64).ravel()
        norms = np.linalg.norm(a) * np.linalg.norm(b)
        cosines.append(float(a @ b / norms) if norms else 1.0)
        agree += int(np.argmax(ours[first]) == np.argmax(reference[first]))
    report = LossyReport(mode, kept_float=kept, calibration_inputs=len(calibration))
    report.layers = [LayerError(name, op, float(np.mean(errors[name]))) for name, op in layers]
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


def describe_error(report: dict, headline: str, advice: str) -> list:
    """Human-readable lines of a report's JSON form: ``headline``, one line per layer, the output."""
    lines = [headline]
    lines += [f"  {e['name']} ({e['op']}): relative error of its output {e['relative_error']:.3f}" for e in report["layers"]]
    lines.append(
        f"  model output on {report['calibration_inputs']} calibration inputs: relative error {report['output_relative_error']:.3f}, "
        f"cosine ≥ {report['output_cosine']:.4f}, top-1 agreement {report['top1_agreement']} ({advice})"
    )
    return lines
