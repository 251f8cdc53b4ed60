"""``nlsq.curve_fit_large``: curve fits of data too large for the in-memory solver.

The fit runs :func:`nlsq.solvers.gram.trf_chunked`: the Jacobian is never formed, only
its ``n x n`` Gram matrix, accumulated over chunks inside the compiled program, so the
answer is the in-memory fit's (see ``docs/large_data.rst``). The data are resident on
the devices (sharded over a mesh) or streamed from the host chunk by chunk.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from nlsq.api.pipeline import fit_large
from nlsq.errors import ChunkError
from nlsq.identity import model_key
from nlsq.pointwise import acts_pointwise
from nlsq.prepare.arguments import initial_guess
from nlsq.prepare.options import keyword_options
from nlsq.program.model import model_runs_on_host
from nlsq.program.sources import ArrayData, IterableData
from nlsq.result import FitResult

__all__ = ["ChunkError", "curve_fit_large"]


def curve_fit_large(
    f: Callable,
    xdata: Any,
    ydata: Any = None,
    p0: Any = None,
    sigma: Any = None,
    absolute_sigma: bool = False,
    check_finite: bool = True,
    bounds: Any = (-np.inf, np.inf),
    *,
    chunk_size: int | None = None,
    devices: Any = None,
    stream: bool | None = None,
    memory_budget: Any = None,
    **kwargs: Any,
) -> FitResult:
    """Fit ``f`` to data too large for the in-memory solver, with its exact answer.

    The Jacobian is never formed: ``J^T J``, ``J^T f`` and the cost are accumulated
    chunk by chunk inside the compiled fit and the trust-region step is solved from
    them, so ``popt`` and ``pcov`` are those of :func:`nlsq.curve_fit` (to rounding)
    in ``O(chunk_size x n)`` working memory. See ``docs/large_data.rst``.

    Parameters
    ----------
    f : callable
        The model ``f(x, p1, ..., pn)`` written with ``jax.numpy``; it must act point
        by point along the data axis (its value at a point depends on that point only).
    xdata : array_like, np.memmap, or callable
        The independent variable, data axis last; or a callable returning an iterable
        of chunks ``(xdata, ydata)`` or ``(xdata, ydata, sigma)`` (then ``ydata`` and
        ``sigma`` are not given). The callable is called once to check the chunks,
        then once per function evaluation; it must yield the same chunks each time.
    ydata : array_like or np.memmap
        The dependent data (length ``M``).
    p0 : array_like, optional
        Initial guess (by default 1 for each parameter, as in ``curve_fit``).
    sigma : None, scalar or M-length array_like
        Standard deviations of ``ydata`` (a 2-D covariance is not supported here).
    absolute_sigma, check_finite, bounds
        As for :func:`nlsq.curve_fit`; ``check_finite`` is applied chunk by chunk and
        names the bad chunk.
    chunk_size : int, optional
        Points per chunk; by default from the memory budget (between 4096 and 2**20).
    devices : None, int, sequence of devices or Mesh
        Devices to shard the data over (default: all of ``jax.devices()``; several
        processes after ``jax.distributed.initialize`` each pass their own part of the
        data). Streamed data use one device.
    stream : bool, optional
        Keep the data on the host and load one chunk at a time (default: when the data
        exceed the memory budget, or come from a callable).
    memory_budget : int or str, optional
        Overrides the ``large.memory_budget`` setting (``NLSQ_MEMORY_BUDGET``).
    **kwargs
        ``ftol``, ``xtol``, ``gtol``, ``x_scale``, ``loss``, ``f_scale``,
        ``max_nfev``/``maxfev``, ``callback``, ``dtype``, as for ``curve_fit``.

    Returns
    -------
    FitResult
        Unpacks as ``popt, pcov``; ``residuals`` and ``jac`` are computed chunk by
        chunk when asked for (the Jacobian is ``M x n``: mind its size).

    Raises
    ------
    ChunkError
        A chunk holds NaN/inf (with ``check_finite``) or has the wrong shape; the
        message names the chunk and its points.
    """
    if callable(xdata) and not isinstance(xdata, np.ndarray):
        if ydata is not None or sigma is not None:
            raise ValueError("With a chunk source, ydata and sigma come from its chunks.")
        data: ArrayData | IterableData = IterableData.scan(xdata)
        first_x = IterableData.unpack(0, next(iter(xdata())))[0]
    else:
        x = xdata if isinstance(xdata, np.ndarray) else np.asarray(xdata, float)
        y = ydata if isinstance(ydata, np.ndarray) else np.asarray(ydata, float)
        if y.size == 0:
            raise ValueError("`ydata` must not be empty!")
        if y.ndim != 1:
            raise ValueError("`ydata` must be a non-empty 1-D array.")
        if x.shape[-1:] != y.shape:
            raise ValueError(
                f"`xdata` of shape {x.shape} must have the data axis last, of length {y.size}."
            )
        weights = None
        if sigma is not None:
            sigma = np.asarray(sigma)
            if sigma.size != 1 and sigma.shape != y.shape:
                raise ValueError("`sigma` must be a scalar or have the length of `ydata`.")
            weights = 1.0 / sigma
        data = ArrayData(x, y, weights, bool(check_finite))
        first_x = np.asarray(x[..., : min(32, y.size)], float)
    p0, bounds = initial_guess(f, p0, bounds)
    options = keyword_options(
        p0,
        jac=None,
        bounds=bounds,
        method="trf",
        kwargs=kwargs,
        caller="curve_fit_large",
        in_memory=False,
    )
    _check_model(f, first_x, options.inputs.x0)
    return fit_large(
        f,
        data,
        options,
        absolute_sigma,
        chunk_size=chunk_size,
        devices=devices,
        stream=stream,
        budget=memory_budget,
    )


def _check_model(f: Callable, xdata: np.ndarray, p0: np.ndarray) -> None:
    """Refuse a model the chunked solver cannot fit, saying why.

    Raises
    ------
    TypeError
        For a model written with NumPy: the chunked solver traces the model.
    ValueError
        For a model whose value at a point depends on other points.
    """
    if model_runs_on_host(f, model_key(f), p0, xdata):
        raise TypeError(
            "curve_fit_large needs a model written with jax.numpy (this one runs only on "
            "the host, with NumPy); fit NumPy models with nlsq.curve_fit."
        )
    if not acts_pointwise(f, xdata, p0):
        raise ValueError(
            "curve_fit_large needs a model that acts point by point along the data axis "
            "(its value at a point must depend on that point only)."
        )
