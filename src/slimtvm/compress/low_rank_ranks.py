"""``--low-rank SPEC``: what SPEC means, and the ranks it gives each layer.

A layer in matrix form (slimtvm.compress.matrix_layers) is factorised by truncated SVD (Gemm,
MatMul, 1×1 conv: one rank r ≤ min(outputs, inputs)) or by Tucker-2 (k×k conv: an output rank and
an input rank, each at most its channel count). SPEC is one of:

* ``rank=F`` (0 < F < 1): the fraction F of full rank, rounded: r = round(F · min(O, I)); Tucker-2
  round(F · O) and round(F · I). A rank that rounds to 0 is refused (name the layer in
  ``--keep-float`` or raise F).
* ``energy=E`` (0 < E < 1): the smallest rank keeping the share E of the squared singular values
  (per mode unfolding for Tucker-2, as HOSVD truncation does).
* ``vbmf``: the EVBMF rank of the matrix (of each mode unfolding for Tucker-2; Kim et al. 2016). A
  rank of 0 (the weights read as noise: untrained layers) keeps the layer as it is.
* ``error=X`` (X > 0): the smallest ranks whose layer output, on the calibration inputs' rows,
  differs from the original by at most X relative (L2): a bisection over r (SVD) or over a shared
  fraction k/32 of both channel counts (Tucker-2), assuming the error falls as ranks grow.

A rank that does not lower the layer's multiply-accumulate count keeps the layer as it is.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from ..errors import SlimError
from .low_rank_factors import mode_unfolding, singular_values, truncated_svd, tucker2, tucker2_kernel
from .matrix_layers import MatrixLayer
from .vbmf import evbmf_rank

KINDS = ("rank", "energy", "error", "vbmf")
FRACTION_STEPS = 32  # error=X: Tucker-2 ranks tried as k/32 of the channel counts


@dataclass(frozen=True)
class LowRankSpec:
    """A parsed SPEC: ``kind`` (one of :data:`KINDS`) and its number (None for ``vbmf``)."""

    kind: str
    value: float | None = None

    def __str__(self) -> str:
        return self.kind if self.value is None else f"{self.kind}={self.value:g}"


def parse_spec(text: str) -> LowRankSpec:
    """The :class:`LowRankSpec` of ``text``; refuses (``SlimError``) anything else than
    ``rank=F``/``energy=E`` with 0 < F, E < 1, ``error=X`` with X > 0, or ``vbmf``."""
    text = str(text).strip()
    if text == "vbmf":
        return LowRankSpec("vbmf")
    match = re.fullmatch(r"(rank|energy|error)=([0-9.eE+-]+)", text)
    usage = "use rank=F, energy=E, error=X or vbmf (e.g. --low-rank rank=0.25)"
    if match is None:
        raise SlimError(f"--low-rank {text!r}: {usage}")
    kind = match.group(1)
    try:
        value = float(match.group(2))
    except ValueError:
        raise SlimError(f"--low-rank {text!r}: {match.group(2)!r} is not a number; {usage}") from None
    if kind in ("rank", "energy") and not 0.0 < value < 1.0:
        raise SlimError(f"--low-rank {text}: {kind} must lie strictly between 0 and 1")
    if kind == "error" and not (value > 0.0 and math.isfinite(value)):
        raise SlimError(f"--low-rank {text}: the error bound must be a positive number (e.g. error=0.05)")
    return LowRankSpec(kind, value)


@dataclass
class RankChoice:
    """A layer's ranks: (r,) for SVD, (out, in) for Tucker-2; ``reason`` says why a layer stays as
    it is (empty when it is factorised)."""

    ranks: tuple
    reason: str = ""

    @property
    def factorised(self) -> bool:
        return not self.reason


def factorised_macs(layer: MatrixLayer, ranks: tuple) -> int:
    """Multiply-accumulates of ``layer`` factorised with ``ranks`` (a full-size Tucker-2 mode needs
    no 1×1 conv)."""
    if not layer.is_spatial:
        (rank,) = ranks
        return layer.positions * rank * (layer.outputs + layer.matrix.shape[1])
    out_rank, in_rank = ranks
    taps = int(np.prod(layer.kernel))
    macs = layer.positions * out_rank * in_rank * taps
    if in_rank < layer.inputs:
        macs += layer.input_positions * layer.inputs * in_rank
    if out_rank < layer.outputs:
        macs += layer.positions * out_rank * layer.outputs
    return macs


def approximation(layer: MatrixLayer, ranks: tuple) -> tuple:
    """(factors, approximated matrix): (left, right) of the SVD or (U, core, V) of Tucker-2."""
    if not layer.is_spatial:
        left, right = truncated_svd(layer.matrix, ranks[0])
        return (left, right), left @ right
    factors = tucker2(layer.kernel_array(), *ranks)
    return factors, tucker2_kernel(*factors).reshape(layer.matrix.shape)


def output_error(layer: MatrixLayer, matrix: np.ndarray, rows: np.ndarray) -> float:
    """Relative L2 error of the layer's output on ``rows`` with ``matrix`` in place of its own."""
    reference = rows @ layer.matrix.T
    if layer.bias is not None:
        reference = reference + layer.bias
    scale = float(np.linalg.norm(reference))
    return float(np.linalg.norm(rows @ (layer.matrix - matrix).T)) / scale if scale else 0.0


def _energy_rank(values: np.ndarray, energy: float) -> int:
    squares = np.cumsum(values**2)
    return int(np.searchsorted(squares / squares[-1], energy - 1e-12) + 1)


def _smallest_passing(candidates: list, passes) -> object:
    """The first of ``candidates`` (ordered by size) for which ``passes`` holds, by bisection; the
    last candidate when none does."""
    low, high = 0, len(candidates) - 1
    while low < high:
        middle = (low + high) // 2
        if passes(candidates[middle]):
            high = middle
        else:
            low = middle + 1
    return candidates[low]


def choose_ranks(layer: MatrixLayer, spec: LowRankSpec, rows: np.ndarray | None = None) -> RankChoice:
    """The ranks ``spec`` gives ``layer`` (``rows``: its calibration input rows, needed by
    ``error=X``). Refuses (``SlimError``) a ``rank=F`` that rounds to 0."""
    spatial = layer.is_spatial
    sizes = (layer.outputs, layer.inputs) if spatial else (min(layer.outputs, layer.matrix.shape[1]),)
    if spec.kind == "rank":
        ranks = tuple(int(round(spec.value * size)) for size in sizes)
        if min(ranks) == 0:
            raise SlimError(
                f"--low-rank {spec}: layer {layer.name} ({'×'.join(map(str, sizes))} full rank) would get rank 0; raise the fraction or name it in --keep-float"
            )
    elif spec.kind == "energy":
        matrices = [mode_unfolding(layer.kernel_array(), mode) for mode in (0, 1)] if spatial else [layer.matrix]
        ranks = tuple(_energy_rank(singular_values(m), spec.value) for m in matrices)
    elif spec.kind == "vbmf":
        matrices = [mode_unfolding(layer.kernel_array(), mode) for mode in (0, 1)] if spatial else [layer.matrix]
        ranks = tuple(evbmf_rank(m) for m in matrices)
        if min(ranks) == 0:
            return RankChoice(ranks, "VBMF finds no component above the noise level (untrained weights?)")
    else:
        if rows is None:
            raise SlimError("--low-rank error=X needs calibration inputs")
        if spatial:
            candidates = sorted({tuple(max(1, math.ceil(k / FRACTION_STEPS * size)) for size in sizes) for k in range(1, FRACTION_STEPS + 1)})
        else:
            candidates = [(r,) for r in range(1, sizes[0] + 1)]
        ranks = _smallest_passing(candidates, lambda r: output_error(layer, approximation(layer, r)[1], rows) <= spec.value)
    full = all(rank >= size for rank, size in zip(ranks, sizes))
    if full or factorised_macs(layer, ranks) >= layer.macs:
        return RankChoice(ranks, f"ranks {'×'.join(map(str, ranks))} do not lower its multiply-accumulates")
    return RankChoice(ranks)
