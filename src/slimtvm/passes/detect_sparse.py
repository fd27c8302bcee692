"""Measure the zeros in every conv2d / matmul weight: the model's sparsity, layer by layer.

Runs after batch-norm and constant folding, so a weight exported as ``weight_orig · weight_mask``
(``torch.nn.utils.prune`` without ``prune.remove``) is one constant by now and looks exactly like
the removed form. For each layer with a constant weight: the fraction of zero weights, the
zero filters (output channels whose weights are all zero), the zero input channels (zero in every
filter), and the multiply-adds with and without the zeros; for the model, the FLOP-weighted
sparsity (the share of multiply-adds whose weight is zero). Reports only; the module is returned
unchanged. :mod:`slimtvm.lowering.sparse_layers` decides which layers run sparse kernels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import tvm
from tvm import relax

from .constants import constant_value


@dataclass(frozen=True)
class WeightSparsity:
    """One layer's weight zeros: ``op`` (``conv2d`` or ``matmul``), weight ``shape``, ``zeros``
    (fraction), ``zero_filters`` and ``zero_inputs`` (counts), ``macs`` (dense multiply-adds per
    run) and ``nonzero_macs``."""

    op: str
    shape: tuple
    zeros: float
    zero_filters: int
    zero_inputs: int
    macs: int
    nonzero_macs: int

    def to_json(self) -> dict:
        return {**asdict(self), "shape": list(self.shape), "zeros": round(self.zeros, 4)}


def conv_weight_sparsity(weight: np.ndarray, out_pixels: int) -> WeightSparsity:
    """Zeros of an OIHW conv ``weight`` whose output has ``out_pixels`` pixels per run (all
    images)."""
    zero = weight == 0
    per_filter = zero.reshape(weight.shape[0], -1)
    per_input = np.moveaxis(zero, 1, 0).reshape(weight.shape[1], -1)
    return WeightSparsity(
        "conv2d",
        tuple(int(v) for v in weight.shape),
        float(zero.mean()) if zero.size else 0.0,
        int(per_filter.all(axis=1).sum()),
        int(per_input.all(axis=1).sum()),
        int(weight.size * out_pixels),
        int((weight.size - zero.sum()) * out_pixels),
    )


def matmul_weight_sparsity(weight: np.ndarray, rows: int) -> WeightSparsity:
    """Zeros of a ``[K, N]`` matmul ``weight`` applied to ``rows`` rows per run."""
    zero = weight == 0
    return WeightSparsity(
        "matmul",
        tuple(int(v) for v in weight.shape),
        float(zero.mean()) if zero.size else 0.0,
        int(zero.all(axis=0).sum()),  # output columns
        int(zero.all(axis=1).sum()),  # input rows
        int(weight.size * rows),
        int((weight.size - zero.sum()) * rows),
    )


def layer_sparsity(call) -> WeightSparsity | None:
    """The sparsity of a ``relax.nn.conv2d`` (NCHW / OIHW, as imported) or 2-D ``relax.matmul``
    call with a constant weight and static shapes; None for anything else."""
    name = getattr(call.op, "name", "") if isinstance(call, relax.Call) else ""
    if name not in ("relax.nn.conv2d", "relax.matmul"):
        return None
    weight = constant_value(call.args[1])
    shape = getattr(call.ty, "shape", None)
    if weight is None or shape is None or not all(isinstance(v, tvm.tirx.IntImm) for v in shape):
        return None
    dims = [int(v) for v in shape]
    if name == "relax.nn.conv2d":
        if str(call.attrs.data_layout) != "NCHW" or str(call.attrs.kernel_layout) != "OIHW" or weight.ndim != 4:
            return None
        return conv_weight_sparsity(weight, dims[0] * dims[2] * dims[3])
    if weight.ndim != 2:
        return None
    return matmul_weight_sparsity(weight, int(np.prod(dims[:-1])))


@dataclass
class SparsityReport:
    """Every measured layer, in graph order, and the model's totals."""

    layers: list = field(default_factory=list)  # WeightSparsity

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def flop_weighted_zeros(self) -> float:
        """The share of the layers' multiply-adds whose weight is zero."""
        return 1.0 - sum(layer.nonzero_macs for layer in self.layers) / self.macs if self.macs else 0.0

    def to_json(self) -> dict:
        return {
            "flop_weighted_zeros": round(self.flop_weighted_zeros, 4),
            "macs": self.macs,
            "layers": [layer.to_json() for layer in self.layers],
        }


@tvm.transform.module_pass(opt_level=0, name="slimtvm.DetectSparsity")
class DetectSparsity:
    """Analysis pass (module unchanged): fills ``report`` with every conv2d/matmul weight's zeros."""

    def __init__(self):
        self.report = SparsityReport()

    def transform_module(self, mod, _ctx):
        self.report = SparsityReport()
        for func in mod.functions.values():
            if not isinstance(func, relax.Function):
                continue
            for block in func.body.blocks:
                for binding in block.bindings:
                    measured = layer_sparsity(binding.value)
                    if measured is not None:
                        self.report.layers.append(measured)
        return mod
