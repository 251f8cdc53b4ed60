"""Result assembly shared by the public entry points."""

from __future__ import annotations

import numpy as np
from scipy.optimize import OptimizeResult

from nlsq.solvers.termination import TERMINATION_MESSAGES
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
        fun=np.asarray(raw.fun, dtype=float),
        jac=np.asarray(raw.jac, dtype=float),
        grad=np.asarray(raw.grad, dtype=float),
        optimality=np.float64(raw.optimality),
        active_mask=np.asarray(raw.active_mask, dtype=int if bounded else float),
        nfev=int(raw.nfev),
        njev=int(raw.njev),
        status=status,
        message=TERMINATION_MESSAGES[status],
        success=status > 0,
    )
