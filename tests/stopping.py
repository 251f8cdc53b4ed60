"""Helpers for parity tests whose stopping test may sit at a rounding tie.

Two correct implementations that round differently may stop with different statuses
when a termination test's quantity equals its tolerance to rounding. Such a pair is
accepted when both are convergence stops and a side that reports the gradient test met
meets it at its own solution; what ``ftol`` and ``xtol`` claim is left to the caller's
comparison of the solutions, whose tolerance bounds what those tests leave unresolved.
"""

from __future__ import annotations

import numpy as np
import scipy.optimize._lsq.common as scipy_common

#: Statuses that report convergence (scipy's least_squares codes).
CONVERGED = (1, 2, 3, 4)


def gradient_test_value(
    method: str, x: np.ndarray, J: np.ndarray, f: np.ndarray, lb: np.ndarray, ub: np.ndarray
) -> float:
    """What scipy's gradient test compares with ``gtol`` at ``x`` (linear loss).

    trf: ``||g v||_inf`` with Coleman-Li's scaling ``v`` (1 without bounds); dogbox:
    ``||g||_inf`` over the variables not held by a bound; lm: MINPACK's largest
    ``|cos|`` between ``f`` and a column of ``J``. ``g = J^T f``.
    """
    g = J.T @ f
    if method == "lm":
        norms, f_norm = np.linalg.norm(J, axis=0), np.linalg.norm(f)
        valid = norms > 0
        if f_norm == 0:
            return 0.0
        return float(np.max(np.abs(g[valid]) / (norms[valid] * f_norm), initial=0.0))
    if method == "dogbox":
        on_bound = np.where(x == lb, -1, np.where(x == ub, 1, 0))
        return float(np.linalg.norm(np.where(on_bound * g < 0, 0.0, g), np.inf))
    v, _ = scipy_common.CL_scaling_vector(x, g, lb, ub)
    return float(np.linalg.norm(g * v, np.inf))


def assert_same_or_legitimate_status(
    status_n: int, status_s: int, gradient_n: float, gradient_s: float, gtol: float, label: str
) -> None:
    """Equal statuses, or two convergence stops at a tie (see the module docstring).

    ``gradient_n`` and ``gradient_s`` are each side's :func:`gradient_test_value`.
    """
    if status_n == status_s:
        return
    for side, status, gradient in (("nlsq", status_n, gradient_n), ("scipy", status_s, gradient_s)):
        assert status in CONVERGED, f"{label}: {side} stopped with status {status}"
        if status == 1:
            assert gradient < gtol * (1 + 1e-6), f"{label}: {side} claims gtol at {gradient}"
