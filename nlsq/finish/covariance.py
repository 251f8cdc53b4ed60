"""scipy's covariance rule, one implementation for single, chunked and batched fits."""

from __future__ import annotations

import numpy as np


def scale_covariances(
    pcov: np.ndarray, cost: np.ndarray, counts: np.ndarray, n: int, absolute_sigma: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Scale unscaled covariances by ``chi2 / dof`` unless ``absolute_sigma``.

    Parameters
    ----------
    pcov : ndarray, shape (B, n, n)
        Unscaled covariances (NaN where they could not be computed).
    cost : ndarray, shape (B,)
        Half the sum of squares of each fit, so ``chi2 = 2 * cost``.
    counts : ndarray, shape (B,)
        Residuals of each fit.
    n : int
        Parameters.
    absolute_sigma : bool
        Keep ``pcov`` as it is (``sigma`` in absolute units).

    Returns
    -------
    pcov : ndarray, shape (B, n, n)
        All ``inf`` for a fit whose covariance could not be estimated.
    failed : ndarray of bool, shape (B,)
        Those fits (scipy warns ``OptimizeWarning`` for each).
    """
    pcov = np.array(pcov, dtype=float)
    failed = np.isnan(pcov).any(axis=(1, 2))
    if not absolute_sigma:
        dof = counts - n
        failed |= dof <= 0
        # Fits without degrees of freedom are all inf below, whatever this gives them.
        pcov *= (2 * cost / np.maximum(dof, 1))[:, None, None]
    if failed.any():
        pcov[failed] = np.inf
    return pcov, failed


def scale_covariance(
    pcov: np.ndarray, cost: float, count: int, n: int, absolute_sigma: bool
) -> tuple[np.ndarray, bool]:
    """:func:`scale_covariances` of one fit."""
    scaled, failed = scale_covariances(
        np.asarray(pcov, dtype=float)[None],
        np.asarray([cost]),
        np.asarray([count]),
        n,
        absolute_sigma,
    )
    return scaled[0], bool(failed[0])
