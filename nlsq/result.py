"""Result assembly shared by the public entry points."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.optimize import OptimizeResult

from nlsq.solvers.termination import TERMINATION_MESSAGES

if TYPE_CHECKING:
    from collections.abc import Iterator
from nlsq.solvers.trf import TRFResult


def to_optimize_result(raw: TRFResult, bounded: bool) -> OptimizeResult:
    """Convert the solver's arrays to scipy's ``OptimizeResult`` with NumPy values.

    Types follow scipy's: ``cost`` and ``optimality`` are ``np.float64``; the
    ``active_mask`` of an unbounded problem is a float array of zeros.
    """
    status = int(raw.status)
    return OptimizeResult(
        x=np.asarray(raw.x, dtype=float),
        cost=np.float64(raw.cost),
        fun=raw.fun.numpy(),
        jac=raw.jac.numpy(),
        grad=np.asarray(raw.grad, dtype=float),
        optimality=np.float64(raw.optimality),
        active_mask=np.asarray(raw.active_mask, dtype=int if bounded else float),
        nfev=int(raw.nfev),
        njev=int(raw.njev),
        status=status,
        message=TERMINATION_MESSAGES[status],
        success=status > 0,
    )


@dataclass(frozen=True)
class FitResult:
    """Result of one curve fit; unpacks as ``popt, pcov = result``.

    Attributes
    ----------
    popt : ndarray
        Optimal parameters.
    pcov : ndarray
        Their estimated covariance (scipy's rule).
    status, message, success
        Termination status as in ``scipy.optimize.least_squares``.
    nfev, njev : int
        Function and Jacobian evaluations.
    cost : float
        Half the (weighted, robust) sum of squared residuals at ``popt``.
    residuals : ndarray
        Weighted residuals at ``popt`` (scipy's ``fvec``).
    jac : ndarray
        Weighted (and loss-scaled) Jacobian at ``popt``.
    optimality : float
        Infinity norm of the scaled gradient at ``popt``.
    active_mask : ndarray
        Bounds active at ``popt``.
    cache_stats : dict
        Compile figures of this fit and the process totals (see
        :func:`nlsq.cache_info`).
    covariance_warning : bool
        True when ``pcov`` could not be estimated (it is then all ``inf``).
    """

    popt: np.ndarray
    pcov: np.ndarray
    status: int
    message: str
    success: bool
    nfev: int
    njev: int
    cost: float
    optimality: float
    active_mask: np.ndarray
    cache_stats: dict[str, Any] = field(default_factory=dict)
    covariance_warning: bool = False
    device_residuals: Any = field(default=None, repr=False)
    device_jac: Any = field(default=None, repr=False)

    @property
    def residuals(self) -> np.ndarray:
        """Weighted residuals at ``popt`` (fetched from the device on first access)."""
        return self.device_residuals.numpy()

    @property
    def jac(self) -> np.ndarray:
        """Weighted Jacobian at ``popt`` (fetched from the device on first access)."""
        return self.device_jac.numpy()

    @property
    def perr(self) -> np.ndarray:
        """One-standard-deviation errors, ``sqrt(diag(pcov))``."""
        return np.sqrt(np.diag(self.pcov))

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.popt, self.pcov))
