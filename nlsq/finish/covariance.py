"""scipy's covariance rule, one implementation for single, chunked and batched fits."""

from __future__ import annotations

from typing import Any

import numpy as np


def scale_covariances(
    pcov: Any, cost: Any, counts: Any, n: int, absolute_sigma: bool, xp: Any = np
) -> tuple[Any, Any]:
    """Scale unscaled covariances by ``chi2 / dof`` unless ``absolute_sigma``.

    Parameters
    ----------
    pcov : array, shape (..., n, n)
        Unscaled covariances (NaN where they could not be computed).
    cost : array or float, shape (...)
        Half the sum of squares of each fit, so ``chi2 = 2 * cost``.
    counts : array or int, shape (...)
        Residuals of each fit.
    n : int
        Parameters.
    absolute_sigma : bool
        Keep ``pcov`` as it is (``sigma`` in absolute units).
    xp : module, optional
        The array namespace: ``numpy`` (the default; a float64 copy is returned) or
        ``jax.numpy`` (traceable and differentiable, for :func:`nlsq.fit`).

    Returns
    -------
    pcov : array, shape (..., n, n)
        All ``inf`` for a fit whose covariance could not be estimated.
    failed : array of bool, shape (...)
        Those fits (scipy warns ``OptimizeWarning`` for each).
    """
    failed = xp.isnan(pcov).any(axis=(-2, -1))
    factor = 1.0
    if not absolute_sigma:
        dof = counts - n
        failed = failed | (dof <= 0)
        # Fits without degrees of freedom are all inf below, whatever this gives them.
        factor = (2 * cost / xp.maximum(dof, 1))[..., None, None]
    if xp is np:
        # One float64 copy, written in place: a large batch's covariances are not
        # copied thrice.
        pcov = np.multiply(pcov, factor, dtype=float)
        if failed.any():
            pcov[failed] = np.inf
        return pcov, failed
    return xp.where(failed[..., None, None], xp.inf, pcov * factor), failed


def scale_covariance(
    pcov: np.ndarray, cost: float, count: int, n: int, absolute_sigma: bool
) -> tuple[np.ndarray, bool]:
    """:func:`scale_covariances` of one fit."""
    scaled, failed = scale_covariances(pcov, cost, count, n, absolute_sigma)
    return scaled, bool(failed)
