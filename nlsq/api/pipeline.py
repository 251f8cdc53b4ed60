"""The one path of every fit: prepare, plan, build and run, finish.

The front doors (:mod:`nlsq.api.curve_fit`, :mod:`nlsq.api.large`,
:mod:`nlsq.api.batch`, :mod:`nlsq.api.fitter`) prepare their arguments and call
these; each picks the plan (in memory, chunked, streamed, sharded, batched), runs it
and assembles the result by the same rules.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from nlsq import config
from nlsq.batch_result import BatchResult
from nlsq.cache import repeat_plans, stats
from nlsq.execute.batched import BatchProgress, chunk_workers, run_batch_chunks
from nlsq.execute.chunked import fit_chunked
from nlsq.execute.dense import DensePlan, fit_dense, rerun_dense
from nlsq.finish.assemble import (
    chunked_fit_data,
    curve_fit_return,
    finish_batch,
    finish_fit,
    lm_infodict_factors,
)
from nlsq.plan.budget import bytes_per_fit, chunk_length
from nlsq.plan.choose import use_chunked
from nlsq.plan.chunked import plan_chunked
from nlsq.prepare.arguments import PreparedFit, prepare_curve_fit
from nlsq.prepare.batch import PreparedBatch, batch_solver_spec
from nlsq.prepare.options import ValidatedOptions
from nlsq.prepare.repeat import RepeatedCall, RepeatedValues, repeated_call, repeated_values
from nlsq.program.build import batch_program
from nlsq.program.context import counted_run
from nlsq.program.sources import ArrayData, IterableData
from nlsq.result import FitData, FitResult
from nlsq.scipy_types import optimize_warning


def fit_curve(
    f: Callable,
    jac: Callable | str | None,
    prepared: PreparedFit,
    *,
    absolute_sigma: bool,
    chunk_size: int | None = None,
    lm_factors: bool = False,
    fixed_length: int | None = None,
    repeated: RepeatedCall | None = None,
) -> tuple[FitResult, dict | None]:
    """One prepared curve fit, in memory or chunked.

    Returns the result and, with ``lm_factors`` (``method='lm'``), ``leastsq``'s
    factorisation for its ``infodict`` (else None). With the signature of a call that
    can be ``repeated``, the fit's decisions are kept for the calls that repeat it.

    Raises
    ------
    RuntimeError
        If the fit does not converge (scipy's message).
    """
    if use_chunked(f, jac, prepared, chunk_size):
        weights = None if prepared.sigma_kind != "diagonal" else np.asarray(prepared.transform)
        data = ArrayData(prepared.xdata, prepared.ydata, weights, check_finite=False)
        return fit_large(f, data, prepared.options, absolute_sigma, chunk_size=chunk_size), None
    outputs, options = fit_dense(f, jac, prepared, lm_factors, fixed_length)
    result = _finish_dense(f, outputs, options, prepared, absolute_sigma)
    if repeated is not None and outputs["plan"] is not None:
        repeat_plans.put(repeated.signature, outputs["plan"])
    return result, lm_infodict_factors(outputs, options)


def _finish_dense(
    f: Callable,
    outputs: dict[str, Any],
    options: ValidatedOptions,
    prepared: PreparedFit,
    absolute_sigma: bool,
) -> FitResult:
    """The :class:`FitResult` of an in-memory fit of prepared data."""
    return finish_fit(
        outputs,
        options,
        prepared.leastsq,
        absolute_sigma=absolute_sigma,
        model=f,
        data=FitData(prepared.xdata, prepared.ydata, prepared.sigma_kind, prepared.transform),
    )


def _refit(
    f: Callable, plan: DensePlan, values: RepeatedValues, bounds: tuple, absolute_sigma: bool
) -> tuple[FitResult, PreparedFit]:
    """A repeated call: its checked values through the plan of the call it repeats."""
    outputs, options = rerun_dense(
        plan, values.x0, bounds, values.xdata, values.ydata, values.transform
    )
    prepared = PreparedFit(
        options,
        values.xdata,
        values.ydata,
        values.sigma_kind,
        values.transform,
        values.x0.size,
        plan.leastsq,
    )
    return _finish_dense(f, outputs, options, prepared, absolute_sigma), prepared


@config.one_reading()
def curve_fit_call(
    f: Callable,
    xdata: Any,
    ydata: Any,
    kwargs: dict[str, Any],
    *,
    p0: Any = None,
    sigma: Any = None,
    absolute_sigma: bool = False,
    check_finite: bool | None = None,
    bounds: Any = (-np.inf, np.inf),
    method: str | None = None,
    jac: Callable | str | None = None,
    nan_policy: str | None = None,
    full_output: bool = False,
    fixed_length: int | None = None,
) -> tuple[FitResult, dict | None, PreparedFit]:
    """``curve_fit``'s whole path, shared by :func:`nlsq.curve_fit` and
    :class:`nlsq.CurveFit`: prepare, then :func:`fit_curve`.

    The named parameters are ``curve_fit``'s; ``kwargs`` holds the rest, including
    ``chunk_size``.
    """
    chunk_size = kwargs.pop("chunk_size", None) if "chunk_size" in kwargs else None
    repeated = None
    if chunk_size is None:
        repeated = repeated_call(
            f, xdata, ydata, p0, sigma, check_finite, bounds, method, jac, nan_policy,
            kwargs, full_output, fixed_length,
        )  # fmt: skip
    plan = None if repeated is None else repeat_plans.get(repeated.signature)
    if plan is not None:
        values = repeated_values(repeated, xdata, ydata, p0, sigma, check_finite)
        if values is not None:
            bounds = (repeated.lb, repeated.ub)
            result, prepared = _refit(f, plan, values, bounds, bool(absolute_sigma))
            return result, None, prepared
    prepared = prepare_curve_fit(
        f, xdata, ydata, p0, sigma, check_finite, bounds, method, jac, nan_policy, kwargs
    )
    result, factors = fit_curve(
        f,
        jac,
        prepared,
        absolute_sigma=bool(absolute_sigma),
        chunk_size=chunk_size,
        lm_factors=full_output and method == "lm",
        fixed_length=fixed_length,
        repeated=repeated,
    )
    return result, factors, prepared


@config.one_reading()
def fit_large(
    f: Callable,
    data: ArrayData | IterableData,
    options: ValidatedOptions,
    absolute_sigma: bool,
    *,
    chunk_size: int | None = None,
    devices: Any = None,
    stream: bool | None = None,
    budget: Any = None,
) -> FitResult:
    """A chunked fit of host data (arrays or a chunk source)."""
    plan = plan_chunked(
        data, options, chunk_size=chunk_size, devices=devices, stream=stream, budget=budget
    )
    outputs = fit_chunked(f, data, options, plan)
    return finish_fit(
        outputs,
        options,
        None,
        absolute_sigma=absolute_sigma,
        model=f,
        data=chunked_fit_data(data, plan.m_total),
    )


@config.one_reading()
def fit_batch(
    f: Callable,
    jac: Callable | str | None,
    batch: PreparedBatch,
    *,
    absolute_sigma: bool,
    fits_per_chunk: int | None,
    budget: Any,
    progress: bool | Callable | None,
) -> BatchResult:
    """A prepared batch: chunks of fits through one vmapped program."""
    real = batch.options.dtype
    length = chunk_length(
        batch.run.size,
        bytes_per_fit(batch.data.size, batch.n, np.dtype(real).itemsize, batch.own_values),
        fits_per_chunk,
        budget,
    )
    chunks = -(-batch.run.size // length) if batch.run.size else 0
    reporter = BatchProgress(batch.run.size, chunks, progress)
    try:
        with counted_run() as call:
            program = None
            spec = batch_solver_spec(batch)
            if batch.run.size:
                col_deriv = batch.leastsq is not None and batch.leastsq.col_deriv
                program = batch_program(
                    f, jac, col_deriv, batch.data.sigma_kind, spec, batch.layout
                )
            # A list that finish_batch empties, so that it holds the only references.
            outputs = list(
                run_batch_chunks(
                    program,
                    batch.device_inputs(),
                    batch.layout,
                    batch.options,
                    batch.run,
                    length,
                    reporter,
                    workers=chunk_workers(spec.small_linalg, chunks),
                )
            )
    finally:
        reporter.close()
    return finish_batch(outputs, batch, absolute_sigma, stats.summary(call), chunks)


def curve_fit_outputs(
    result: FitResult, factors: dict | None, prepared: PreparedFit, full_output: bool
) -> tuple:
    """What ``curve_fit`` returns for a finished fit (``popt, pcov``, and ``infodict,
    mesg, ier`` with ``full_output``), after scipy's covariance warning, which points
    at the caller of ``curve_fit`` (or ``CurveFit.curve_fit``)."""
    warn_if_no_covariance(result, stacklevel=4)
    if full_output:
        return curve_fit_return(result, factors, prepared.options, prepared.leastsq)
    return result.popt, result.pcov


def warn_if_no_covariance(result: FitResult, stacklevel: int = 3) -> None:
    """scipy's ``OptimizeWarning`` when the covariance could not be estimated."""
    if result.covariance_warning:
        warnings.warn(
            "Covariance of the parameters could not be estimated",
            category=optimize_warning(),
            stacklevel=stacklevel,
        )
