"""One result assembly: a fit's outputs, statuses and covariance as the caller's result.

:func:`finish_fit` turns the outputs of a single fit (in memory or chunked) into a
:class:`nlsq.FitResult`, :func:`finish_batch` those of a batch into a
:class:`nlsq.BatchResult`, and :func:`to_optimize_result` those of ``least_squares``
into scipy's ``OptimizeResult``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from nlsq.batch_result import INVALID_INPUT, NOT_FINITE_AT_P0, BatchResult
from nlsq.finish.covariance import scale_covariance, scale_covariances
from nlsq.finish.status import (
    INITIAL_NOT_FINITE,
    batch_statuses,
    least_squares_status,
    leastsq_message,
    status_message,
)
from nlsq.prepare.options import ValidatedOptions
from nlsq.program.run import SCALAR_FIELDS
from nlsq.program.sources import ArrayData
from nlsq.result import FitData, FitResult
from nlsq.scipy_types import optimize_result
from nlsq.solvers.trf import TRFResult


def to_optimize_result(raw: TRFResult, bounded: bool) -> Any:
    """Convert the solver's arrays to scipy's ``OptimizeResult`` with NumPy values.

    Types follow scipy's: ``cost`` and ``optimality`` are ``np.float64``; the
    ``active_mask`` of an unbounded problem is a float array of zeros.
    """
    status = int(raw.status)
    success, message = least_squares_status(status)
    return optimize_result(
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
        message=message,
        success=success,
    )


def finish_fit(
    outputs: dict[str, Any],
    options: ValidatedOptions,
    leastsq_settings: Any,
    *,
    absolute_sigma: bool,
    model: Callable | None,
    data: FitData | None,
) -> FitResult:
    """The :class:`FitResult` of one fit's outputs, by ``curve_fit``'s rules.

    ``outputs`` holds ``x, cost, optimality, active_mask, nfev, njev, status``, the
    unscaled ``pcov``, the number of residuals ``n_points``, ``cache_stats`` and the
    lazily fetched ``residuals`` and ``jac``.

    Raises
    ------
    RuntimeError
        If the fit did not converge (scipy's message).
    """
    status = int(outputs["status"])
    converged, message = status_message(status, options, leastsq_settings)
    if not converged:
        raise RuntimeError("Optimal parameters not found: " + message)
    popt = np.asarray(outputs["x"], dtype=float)
    cost = float(outputs["cost"])
    pcov, covariance_warning = scale_covariance(
        outputs["pcov"], cost, outputs["n_points"], popt.size, absolute_sigma
    )
    return FitResult(
        popt=popt,
        pcov=pcov,
        status=status,
        message=message,
        success=True,
        nfev=int(outputs["nfev"]),
        njev=int(outputs["njev"]),
        cost=cost,
        optimality=float(outputs["optimality"]),
        active_mask=np.asarray(outputs["active_mask"], dtype=int),
        cache_stats=outputs["cache_stats"],
        covariance_warning=covariance_warning,
        device_residuals=outputs["residuals"],
        device_jac=outputs["jac"],
        n_points=outputs["n_points"],
        absolute_sigma=absolute_sigma,
        model=model,
        data=data,
    )


@functools.cache
def _ipvt_offset() -> int:
    """What the installed scipy's ``leastsq`` adds to 0-based column indices in ``ipvt``.

    scipy's Fortran MINPACK returned them 1-based; its C translation returns them
    0-based. A one-parameter fit, whose ``ipvt`` is ``[first index]``, tells which.
    """
    from scipy.optimize import leastsq

    *_, infodict, _, _ = leastsq(lambda p: np.array([p[0], p[0]]), [1.0], full_output=True)
    return int(infodict["ipvt"][0])


def leastsq_factors(
    fjac: np.ndarray, ipvt: np.ndarray, qtf: np.ndarray, m: int
) -> dict[str, np.ndarray]:
    """MINPACK's factorisation in the layout of ``leastsq``'s ``infodict``.

    Parameters
    ----------
    fjac : ndarray, shape (m_padded, n)
        MINPACK's ``fjac`` (rows past ``m`` pad the data to a size bucket).
    ipvt : ndarray, shape (n,)
        0-based column pivoting.
    qtf : ndarray, shape (n,)
    m : int
        Number of real residuals.

    Returns
    -------
    dict
        ``fjac`` (n, m), its transpose as scipy stores it; ``ipvt`` as int32 in the
        installed scipy's base; ``qtf``.
    """
    return {
        "fjac": np.array(np.asarray(fjac, dtype=float)[:m].T),
        "ipvt": np.asarray(ipvt, dtype=np.int32) + _ipvt_offset(),
        "qtf": np.asarray(qtf, dtype=float),
    }


def finish_batch(
    outputs: list[np.ndarray],
    batch: Any,
    absolute_sigma: bool,
    cache_stats: dict[str, Any],
    chunks: int,
) -> BatchResult:
    """Scatter the fits that ran back into input order and apply ``curve_fit``'s rules.

    ``outputs`` (the summaries and unscaled covariances of the fits that ran) is
    emptied: once scattered, a large batch's outputs are freed.
    """
    summary, pcov_unscaled = outputs
    outputs.clear()
    n, n_fits, run, options, leastsq = (
        batch.n,
        batch.n_fits,
        batch.run,
        batch.options,
        batch.leastsq,
    )
    columns = dict(
        zip(("x", "grad", "active_mask"), np.split(summary[:, : 3 * n], 3, axis=1), strict=True)
    )
    scalars = dict(zip(SCALAR_FIELDS, summary[:, 3 * n :].T, strict=True))

    popt = np.full((n_fits, n), np.nan)
    pcov_raw = np.full((n_fits, n, n), np.nan)
    status = np.full(n_fits, INVALID_INPUT, dtype=np.int64)
    nfev = np.zeros(n_fits, dtype=np.int64)
    njev = np.zeros(n_fits, dtype=np.int64)
    cost = np.full(n_fits, np.nan)
    optimality = np.full(n_fits, np.nan)
    active_mask = np.zeros((n_fits, n), dtype=int)

    popt[run] = columns["x"]
    pcov_raw[run] = pcov_unscaled
    status[run] = scalars["status"].astype(np.int64)
    nfev[run] = scalars["nfev"].astype(np.int64)
    njev[run] = scalars["njev"].astype(np.int64)
    cost[run] = scalars["cost"]
    optimality[run] = scalars["optimality"]
    active_mask[run] = columns["active_mask"].astype(int)
    del summary, pcov_unscaled, columns, scalars

    status[status == INITIAL_NOT_FINITE] = NOT_FINITE_AT_P0
    failed = np.isin(status, (NOT_FINITE_AT_P0, INVALID_INPUT))
    popt[failed] = np.nan
    cost[failed] = np.nan
    optimality[failed] = np.nan

    pcov, covariance_warning = scale_covariances(
        pcov_raw, np.nan_to_num(cost), batch.counts, n, absolute_sigma
    )
    pcov[failed] = np.nan
    covariance_warning &= ~failed
    converged, messages = batch_statuses(status, options, leastsq)
    success = converged & ~failed
    return BatchResult(
        popt=popt,
        pcov=pcov,
        status=status,
        success=success,
        nfev=nfev,
        njev=njev,
        cost=cost,
        optimality=optimality,
        active_mask=active_mask,
        n_points=batch.counts.astype(np.int64),
        covariance_warning=covariance_warning,
        errors=dict(sorted(batch.errors.items())),
        messages=messages,
        method=options.method,
        cache_stats=cache_stats,
        chunks=chunks,
    )


def lm_infodict_factors(outputs: dict[str, Any], options: ValidatedOptions) -> dict | None:
    """``leastsq``'s ``fjac``, ``ipvt``, ``qtf`` (and ``njev`` with a ``Dfun``) for
    ``curve_fit(method='lm', full_output=True)``; None for other fits."""
    if outputs["lm_factors"] is None:
        return None
    fjac, ipvt, qtf = outputs["lm_factors"]
    factors = leastsq_factors(fjac, ipvt, qtf, outputs["n_points"])
    if options.jac_scheme != "minpack":
        # leastsq counts Jacobian evaluations only when it has a Dfun (lmder).
        factors = {"njev": outputs["njev"], **factors}
    return factors


def curve_fit_return(
    result: FitResult, factors: dict | None, options: ValidatedOptions, leastsq_settings: Any
) -> tuple:
    """``curve_fit(..., full_output=True)``'s ``popt, pcov, infodict, mesg, ier``."""
    if factors is None:
        infodict = {"nfev": result.nfev, "fvec": result.residuals}
    else:
        # leastsq's keys, in its order.
        infodict = {"fvec": result.residuals, "nfev": result.nfev, **factors}
    infodict["cache_stats"] = result.cache_stats
    ier = result.status
    if leastsq_settings is not None:
        ier, _ = leastsq_message(result.status, options)
    return result.popt, result.pcov, infodict, result.message, ier


def chunked_fit_data(data: Any, m_total: int) -> FitData | None:
    """The data for ``FitResult``'s statistics: only arrays that hold every point
    (not a chunk source, not one process's part of a multi-process fit)."""
    if not isinstance(data, ArrayData) or data.m != m_total:
        return None
    kind = "none" if data.weights is None else "diagonal"
    return FitData(data.x, data.y, kind, data.weights)
