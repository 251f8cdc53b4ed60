"""A ``curve_fit`` call that repeats an earlier one with new values.

Fitting many datasets with one model calls ``curve_fit`` again and again with the same
model, options and shapes. What the first call decided from those (validated options,
the compiled program, the size bucket) holds for the next ones, so a repeated call
only checks and converts its values, as a full call does, and runs the program. The
signature below holds everything such a decision may depend on; calls it cannot
describe (a callable ``jac``, a NumPy model, ``nan_policy``, ``full_output``, options
that warn, lists for data) take the full path every time.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np

from nlsq import config
from nlsq.identity import model_key
from nlsq.prepare.arguments import (
    bounds_arrays,
    checked_data,
    initialize_feasible,
    parameter_count,
    sigma_transform,
)
from nlsq.prepare.options import tolerance_warns

#: Keyword values a signature may hold: immutable and compared by value.
_PLAIN = (str, int, float, bool, type(None))
_TOLERANCES = ("ftol", "xtol", "gtol")


@dataclass(frozen=True)
class RepeatedCall:
    """A call's signature and its bounds (the bounds' values are inputs, not decisions)."""

    signature: Hashable
    lb: np.ndarray
    ub: np.ndarray


@dataclass(frozen=True)
class RepeatedValues:
    """A repeated call's values, checked and converted as a full call does."""

    x0: np.ndarray
    xdata: np.ndarray
    ydata: np.ndarray
    sigma_kind: str
    transform: np.ndarray | None


def repeated_call(
    f: Callable,
    xdata: Any,
    ydata: Any,
    p0: Any,
    sigma: Any,
    check_finite: bool | None,
    bounds: Any,
    method: str | None,
    jac: Any,
    nan_policy: str | None,
    kwargs: dict[str, Any],
    full_output: bool,
    fixed_length: int | None,
) -> RepeatedCall | None:
    """The signature of a call whose decisions can be reused, or None.

    Two calls with equal signatures agree on the model's identity, the options, the
    bounded-ness, the data's shapes and dtypes, the kind of ``sigma`` and the settings
    (environment and config file).
    """
    if (
        jac is not None
        or nan_policy is not None
        or full_output
        or type(xdata) is not np.ndarray
        or type(ydata) is not np.ndarray
        or ydata.ndim != 1
        or not (sigma is None or (type(sigma) is np.ndarray and sigma.ndim == 1))
    ):
        return None
    options = []
    for name, value in kwargs.items():
        if not isinstance(value, _PLAIN):
            return None
        if name in _TOLERANCES and not (
            isinstance(value, int | float | type(None)) and not tolerance_warns(value)
        ):
            return None
        options.append((name, value))
    try:
        n = parameter_count(f, p0)
        lb, ub = bounds_arrays(bounds, n)
    except (TypeError, ValueError):
        return None
    identity = model_key(f)
    if identity is None:
        return None
    signature = (
        identity,
        method,
        check_finite,
        n,
        bool(np.isfinite(lb).any() or np.isfinite(ub).any()),
        xdata.shape,
        xdata.dtype.str,
        ydata.shape,
        ydata.dtype.str,
        None if sigma is None else (sigma.shape, sigma.dtype.str),
        frozenset(options),
        fixed_length,
        config.settings_token(),
    )
    return RepeatedCall(signature, lb, ub)


def repeated_values(
    call: RepeatedCall,
    xdata: np.ndarray,
    ydata: np.ndarray,
    p0: Any,
    sigma: np.ndarray | None,
    check_finite: bool | None,
) -> RepeatedValues | None:
    """The values of a repeated call, checked in a full call's order.

    None where a full call would refuse the initial point or the bounds (it then gives
    the error); NaN or inf in the data and a bad ``sigma`` raise as in a full call.
    """
    lb, ub = call.lb, call.ub
    if p0 is None:
        p0 = initialize_feasible(lb, ub)
    p0 = np.atleast_1d(p0)
    if p0.dtype.kind not in "biuf" or p0.ndim != 1:
        return None
    x0 = p0.astype(float)
    if x0.shape != lb.shape or not (lb < ub).all() or not ((x0 >= lb) & (x0 <= ub)).all():
        return None
    xdata, ydata = checked_data(xdata, ydata, True if check_finite is None else check_finite)
    kind, transform = sigma_transform(sigma, ydata.size)
    return RepeatedValues(x0, xdata, ydata, kind, transform)
