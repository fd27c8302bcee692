"""The rank of a matrix by empirical variational Bayesian matrix factorisation (EVBMF).

Written from the global analytic solution of Nakajima, Sugiyama, Babacan and Tomioka, "Global
analytic solution of fully-observed variational Bayesian matrix factorization" (JMLR 14, 2013),
as Kim et al. (2016) use it to choose Tucker-2 ranks. For ``Y`` (L × M, L ≤ M; transposed
otherwise) with singular values γ_h, noise variance σ² and α = L / M, write
x_h = γ_h² / (M σ²). A component survives exactly when x_h exceeds the threshold
x̲ = (1 + τ̲)(1 + α / τ̲), where τ̲ > 0 is the zero of ψ(τ) = ln(τ + 1) + α ln(τ / α + 1) − τ; a
surviving component's free energy is lower than a pruned one's by −ψ(τ_h), with
τ_h = ½ (x_h − 1 − α + √((x_h − 1 − α)² − 4α)). σ² is the minimiser of the free energy

    Ω(σ²) = Σ_h (x_h − ln x_h) + Σ_{x_h > x̲} ψ(τ_h) + (L − H) ln σ² + r / (M σ²)

(H singular values kept from the SVD, r the squared norm they miss; here H = L and r = 0), found
by a log-spaced scan refined with scipy's bounded scalar minimiser. The rank is the number of
surviving components at that σ².
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import brentq, minimize_scalar

SCAN_POINTS = 200


def _psi(tau: np.ndarray, alpha: float) -> np.ndarray:
    return np.log(tau + 1) + alpha * np.log(tau / alpha + 1) - tau


def _threshold(alpha: float) -> float:
    """x̲: the smallest x_h at which a component survives."""
    tau = brentq(lambda t: _psi(np.float64(t), alpha), 1e-9 + 0.5 * np.sqrt(alpha), 100.0 + 10 * np.sqrt(alpha))
    return (1 + tau) * (1 + alpha / tau)


def _free_energy(sigma2: float, gammas2: np.ndarray, rows: int, cols: int, threshold: float) -> float:
    alpha = rows / cols
    x = gammas2 / (cols * sigma2)
    energy = float(np.sum(x - np.log(x))) + (rows - gammas2.size) * np.log(sigma2)
    alive = x[x > threshold]
    if alive.size:
        shifted = alive - 1 - alpha
        tau = 0.5 * (shifted + np.sqrt(np.maximum(shifted * shifted - 4 * alpha, 0.0)))
        energy += float(np.sum(_psi(tau, alpha)))
    return energy


def evbmf_rank(matrix: np.ndarray) -> int:
    """The EVBMF rank of ``matrix`` (0 when the whole matrix reads as noise). Refuses an empty
    matrix or one with non-finite values (``ValueError``)."""
    y = np.asarray(matrix, np.float64)
    if y.ndim != 2 or y.size == 0 or not np.isfinite(y).all():
        raise ValueError("EVBMF needs a finite, non-empty matrix")
    if y.shape[0] > y.shape[1]:
        y = y.T
    rows, cols = y.shape
    gammas = np.linalg.svd(y, compute_uv=False)
    gammas2 = np.maximum(gammas * gammas, np.finfo(np.float64).tiny)
    if gammas[0] == 0:
        return 0
    threshold = _threshold(rows / cols)
    upper = float(np.sum(gammas2)) / (rows * cols)  # every component noise
    grid = np.exp(np.linspace(np.log(upper * 1e-8), np.log(upper), SCAN_POINTS))
    energies = [_free_energy(s, gammas2, rows, cols, threshold) for s in grid]
    best = int(np.argmin(energies))
    low, high = grid[max(best - 1, 0)], grid[min(best + 1, SCAN_POINTS - 1)]
    refined = minimize_scalar(lambda log_s: _free_energy(np.exp(log_s), gammas2, rows, cols, threshold), bounds=(np.log(low), np.log(high)), method="bounded")
    sigma2 = float(np.exp(refined.x)) if refined.fun <= energies[best] else float(grid[best])
    return int(np.sum(gammas2 / (cols * sigma2) > threshold))
