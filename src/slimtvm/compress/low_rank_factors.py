"""Low-rank factors of a layer's weights: truncated SVD of a matrix, Tucker-2 of a conv kernel.

A matrix ``W`` (outputs × inputs) of rank ``r`` is ``left @ right`` with ``right`` (r × inputs)
applied first and ``left`` (outputs × r) last; the singular values go into ``left``, the factor the
data-aware reconstruction refits.

A conv kernel ``W`` (O, I, kh, kw) in Tucker-2 form (Kim et al. 2016) is
``W[o, i] ≈ Σ U[o, a] · core[a, b] · V[i, b]`` over the two channel modes only: a 1×1 conv with
``Vᵀ`` (I → R_in), the k×k conv with ``core`` (R_in → R_out, the layer's strides and padding) and a
1×1 conv with ``U`` (R_out → O, the bias). The factors start from the HOSVD (leading left singular
vectors of the mode unfoldings) and improve by HOOI sweeps (alternating: each factor the leading
singular vectors of the kernel projected on the other), numpy's SVD throughout.
"""

from __future__ import annotations

import numpy as np

HOOI_SWEEPS = 3


def singular_values(matrix: np.ndarray) -> np.ndarray:
    """Singular values of ``matrix``, largest first (float64)."""
    return np.linalg.svd(np.asarray(matrix, np.float64), compute_uv=False)


def mode_unfolding(weight: np.ndarray, mode: int) -> np.ndarray:
    """The mode-``mode`` unfolding of a conv kernel (O, I, kh, kw): that axis as rows."""
    return np.moveaxis(weight, mode, 0).reshape(weight.shape[mode], -1)


def truncated_svd(matrix: np.ndarray, rank: int) -> tuple:
    """(left (m × rank), right (rank × n)) with ``left @ right`` the best rank-``rank``
    approximation of ``matrix`` (m × n) in Frobenius norm. Refuses a rank outside 1..min(m, n)."""
    m, n = matrix.shape
    if not 1 <= rank <= min(m, n):
        raise ValueError(f"rank {rank} outside 1..{min(m, n)}")
    u, s, vt = np.linalg.svd(np.asarray(matrix, np.float64), full_matrices=False)
    return (u[:, :rank] * s[:rank]).astype(np.float32), vt[:rank].astype(np.float32)


def _leading(matrix: np.ndarray, rank: int) -> np.ndarray:
    return np.linalg.svd(matrix, full_matrices=False)[0][:, :rank]


def tucker2(weight: np.ndarray, out_rank: int, in_rank: int, sweeps: int = HOOI_SWEEPS) -> tuple:
    """(U (O × out_rank), core (out_rank, in_rank, kh, kw), V (I × in_rank)), orthonormal U and V,
    approximating the conv kernel ``weight`` (O, I, kh, kw) as the module doc says. A rank equal to
    its mode's size gives an identity factor (that mode is not reduced). Refuses ranks outside
    1..O and 1..I."""
    out_channels, in_channels = weight.shape[:2]
    if not (1 <= out_rank <= out_channels and 1 <= in_rank <= in_channels):
        raise ValueError(f"Tucker-2 ranks ({out_rank}, {in_rank}) outside 1..{out_channels}, 1..{in_channels}")
    w = np.asarray(weight, np.float64)
    full_out, full_in = out_rank == out_channels, in_rank == in_channels
    u = np.eye(out_channels) if full_out else _leading(mode_unfolding(w, 0), out_rank)
    v = np.eye(in_channels) if full_in else _leading(mode_unfolding(w, 1), in_rank)
    for _ in range(sweeps if not (full_out or full_in) else 0):
        u = _leading(mode_unfolding(np.einsum("oihw,ib->obhw", w, v, optimize=True), 0), out_rank)
        v = _leading(mode_unfolding(np.einsum("oihw,oa->aihw", w, u, optimize=True), 1), in_rank)
    core = np.einsum("oihw,oa,ib->abhw", w, u, v, optimize=True)
    return u.astype(np.float32), core.astype(np.float32), v.astype(np.float32)


def tucker2_kernel(u: np.ndarray, core: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The conv kernel (O, I, kh, kw) the Tucker-2 factors stand for."""
    return np.einsum("oa,abhw,ib->oihw", u.astype(np.float64), core.astype(np.float64), v.astype(np.float64), optimize=True).astype(np.float32)
