"""Result assembly shared by the public entry points."""

from __future__ import annotations

import numpy as np
from scipy.optimize import OptimizeResult

from nlsq.solvers.termination import TERMINATION_MESSAGES
from nlsq.solvers.trf import TRFResult


def to_optimize_result(raw: TRFResult) -> OptimizeResult:
    """Convert the solver's arrays to scipy's ``OptimizeResult`` with NumPy values."""
    status = int(raw.status)
    return OptimizeResult(
        x=np.asarray(raw.x, dtype=float),
        cost=float(raw.cost),
        fun=np.asarray(raw.fun, dtype=float),
        jac=np.asarray(raw.jac, dtype=float),
        grad=np.asarray(raw.grad, dtype=float),
        optimality=float(raw.optimality),
        active_mask=np.asarray(raw.active_mask, dtype=int),
        nfev=int(raw.nfev),
        njev=int(raw.njev),
        status=status,
        message=TERMINATION_MESSAGES[status],
        success=status > 0,
    )
