"""Every status code and message of a fit, and which statuses count as converged.

One table for single, chunked and batched fits: ``least_squares``'s statuses with its
messages, ``leastsq``'s ``ier`` and messages for ``curve_fit(method='lm')``, and the
batch's own codes for fits that did not run.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nlsq.batch_result import BATCH_MESSAGES
from nlsq.prepare.options import ValidatedOptions
from nlsq.solvers.termination import INITIAL_NOT_FINITE, TERMINATION_MESSAGES

__all__ = [
    "INITIAL_NOT_FINITE",
    "TERMINATION_MESSAGES",
    "least_squares_status",
    "leastsq_message",
    "status_message",
]


#: leastsq's info code for each least_squares status.
_LEASTSQ_INFO = {-1: 0, 0: 5, 1: 4, 2: 1, 3: 2, 4: 3}


def leastsq_message(status: int, options: ValidatedOptions) -> tuple[int, str]:
    """``(ier, mesg)`` of ``scipy.optimize.leastsq`` for a solver status."""
    info = _LEASTSQ_INFO.get(status, status)
    ftol, xtol, gtol = options.inputs.ftol, options.inputs.xtol, options.inputs.gtol
    maxfev = options.inputs.max_nfev
    messages = {
        0: "Improper input parameters.",
        1: "Both actual and predicted relative reductions in the sum of squares\n"
        f"  are at most {ftol:f}",
        2: f"The relative error between two consecutive iterates is at most {xtol:f}",
        3: "Both actual and predicted relative reductions in the sum of squares\n"
        f"  are at most {ftol:f} and the relative error between two consecutive "
        f"iterates is at \n  most {xtol:f}",
        4: "The cosine of the angle between func(x) and any column of the\n"
        f"  Jacobian is at most {gtol:f} in absolute value",
        5: f"Number of calls to function has reached maxfev = {maxfev}.",
        6: f"ftol={ftol:f} is too small, no further reduction in the sum of squares\n"
        "  is possible.",
        7: f"xtol={xtol:f} is too small, no further improvement in the approximate\n"
        "  solution is possible.",
        8: f"gtol={gtol:f} is too small, func(x) is orthogonal to the columns of\n"
        "  the Jacobian to machine precision.",
    }
    return info, messages[info]


#: 'lm' in single precision can stop because a tolerance is below the working
#: precision's epsilon (MINPACK's info 6 to 8); in double precision scipy's validation
#: refuses such tolerances first.
TOLERANCE_TOO_SMALL_MESSAGES = {
    6: "`ftol` is too small for the working precision: no further reduction in the sum "
    "of squares is possible.",
    7: "`xtol` is too small for the working precision: no further improvement in the "
    "approximate solution is possible.",
    8: "`gtol` is too small for the working precision: `fun` is orthogonal to the "
    "columns of the Jacobian to machine precision.",
}


def least_squares_status(status: int) -> tuple[bool, str]:
    """``(success, message)`` of ``least_squares``: scipy's for its statuses, and
    failure for MINPACK's tolerances that are too small."""
    if status in TOLERANCE_TOO_SMALL_MESSAGES:
        return False, TOLERANCE_TOO_SMALL_MESSAGES[status]
    return status > 0, TERMINATION_MESSAGES[status]


def status_message(status: int, options: ValidatedOptions, leastsq: Any) -> tuple[bool, str]:
    """``(converged, message)`` of a fit's status.

    ``leastsq`` is the fit's ``LeastsqSettings`` (``curve_fit(method='lm')``: scipy's
    ``leastsq`` messages, converged for ``ier`` 1 to 4) or None (``least_squares``'s,
    converged for a positive status). A batch's own codes have their own messages.
    """
    if status in BATCH_MESSAGES:
        return False, BATCH_MESSAGES[status]
    if leastsq is not None:
        ier, message = leastsq_message(status, options)
        return ier in (1, 2, 3, 4), message
    return status > 0, TERMINATION_MESSAGES.get(status, f"Termination status {status}.")


def batch_statuses(
    status: np.ndarray, options: ValidatedOptions, leastsq: Any
) -> tuple[np.ndarray, dict[int, str]]:
    """:func:`status_message` for every fit of a batch: converged flags and the message
    of each distinct status."""
    table = {code: status_message(code, options, leastsq) for code in np.unique(status).tolist()}
    converged = [code for code, (ok, _) in table.items() if ok]
    return np.isin(status, converged), {code: message for code, (_, message) in table.items()}
