"""``nlsq.curve_fit_batch``: many independent curve fits as one compiled program.

The single-fit program (the same solver, the same covariance) is ``jax.vmap``-ed over
the fits and jitted once per shape. The inputs each fit has of its own (``ydata``
always; ``xdata``, ``sigma``, ``p0``, the bounds and the number of real points when
they differ) get a leading batch axis; shared inputs are passed once. Validation gives
each fit with bad input its own status instead of raising; large batches run in chunks
whose size follows the memory budget, with progress after each chunk.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from nlsq.api.pipeline import fit_batch
from nlsq.batch_result import BatchResult
from nlsq.prepare.batch import prepare_batch

#: ``least_squares``/``curve_fit`` keywords that report per iteration or per call and
#: have no meaning for a batch.
_REJECTED_OPTIONS = {
    "chunk_size": "`chunk_size` (points per chunk of one large fit) does not apply to "
    "curve_fit_batch; `fits_per_chunk` sets the fits per compiled call.",
    "verbose": "`verbose` is not supported by curve_fit_batch (use `progress`).",
    "callback": "`callback` is not supported by curve_fit_batch (use `progress`).",
    "full_output": "`full_output` is not supported by curve_fit_batch: the BatchResult "
    "holds nfev, status and messages.",
}


def curve_fit_batch(
    f: Callable,
    xdata: Any,
    ydata: Any,
    p0: Any = None,
    sigma: Any = None,
    bounds: Any = (-np.inf, np.inf),
    method: str | None = None,
    *,
    absolute_sigma: bool = False,
    check_finite: bool | None = None,
    jac: Callable | str | None = None,
    mask: Any = None,
    nan_policy: str | None = None,
    fits_per_chunk: int | None = None,
    memory_budget: int | str | None = None,
    progress: bool | Callable[[int, int], Any] | None = None,
    **options: Any,
) -> BatchResult:
    """Fit one model to many independent datasets at once.

    Every fit runs the solver of :func:`nlsq.curve_fit`, with the same options, and
    gives the same ``popt``, ``pcov``, ``status`` and ``nfev`` as fitting it alone;
    all fits run together as one compiled, vectorised program. A fit whose input is
    bad, or whose residuals are not finite at ``p0``, gets its own status and NaN
    results instead of an exception, and never affects the others.

    Parameters
    ----------
    f : callable
        The model ``f(x, p1, ..., pn)``, written with ``jax.numpy``.
    xdata : array_like or list of array_like
        Shared by all fits: shape ``(M,)`` or ``(k, M)``. One per fit: shape
        ``(B, M)`` or ``(B, k, M)`` (an array whose first axis has length ``B`` and
        at least two axes is taken as per fit), or a list of ``B`` arrays.
    ydata : array_like, shape (B, M), or list of B 1-D arrays
        One row per fit. A list of arrays of different lengths fits each on its own
        points (ragged data). A memory map (``np.load(path, mmap_mode="r")``) is read
        chunk by chunk, never copied whole.
    p0 : array_like, shape (n,) or (B, n), optional
        Initial guesses, shared or per fit; by default as ``curve_fit`` per fit.
    sigma : None, scalar, or array_like, optional
        Standard deviations shaped like ``ydata`` (per fit) or ``(M,)`` (shared), or
        covariances ``(B, M, M)`` (per fit) or ``(M, M)`` (shared); a list of per-fit
        arrays for ragged data.
    bounds : 2-tuple of array_like or `scipy.optimize.Bounds`, optional
        Each bound a scalar, ``(n,)`` (shared) or ``(B, n)`` (per fit).
    method : {None, 'trf', 'dogbox', 'lm'}, optional
        As in :func:`nlsq.curve_fit`; ``None`` is 'trf'.
    absolute_sigma : bool, optional
        As in :func:`nlsq.curve_fit`.
    check_finite : bool, optional
        Give fits with NaN or inf in their data status :data:`INVALID_INPUT`
        (default: True unless ``nan_policy`` is given). With False such data run,
        and usually end with :data:`NOT_FINITE_AT_P0`.
    jac : callable, str or None, optional
        As in :func:`nlsq.curve_fit`.
    mask : array_like of bool, shape (B, M), optional
        True for the points each fit uses (ragged data in a rectangular array).
    nan_policy : {None, 'omit', 'raise'}, optional
        'omit' drops each fit's NaN points; 'raise' raises if there are any.
    fits_per_chunk : int, optional
        Fits per compiled call (default: what ``memory_budget`` allows, at most
        1024).
    memory_budget : int or str, optional
        Approximate memory one chunk may use, in bytes or as a size like ``"256MiB"``
        (default: the setting ``large.memory_budget``, environment variable
        ``NLSQ_MEMORY_BUDGET``, as for every fit).
    progress : bool or callable, optional
        A callable ``progress(done, total)`` is called after each chunk; True also
        shows a tqdm bar when tqdm is installed. Progress is always logged to the
        ``nlsq`` logger (INFO when there are several chunks).
    **options
        The other keywords of :func:`nlsq.curve_fit` (``loss``, ``f_scale``,
        ``x_scale``, ``ftol``, ``xtol``, ``gtol``, ``max_nfev``/``maxfev``,
        ``dtype``, ``jacobian_mode``, ``diff_step``, ...), applied to every fit.
        ``verbose``, ``callback`` and ``full_output`` are refused.

    Returns
    -------
    BatchResult
        ``popt`` (B, n), ``pcov`` (B, n, n), ``perr``, ``status``, ``success``,
        ``nfev``, ``cost``, per-fit messages and a summary; unpacks as
        ``popt, pcov``.

    Raises
    ------
    ValueError, TypeError
        For arguments that are wrong for the whole batch (shapes, options), with
        ``curve_fit``'s messages where it has one.

    Notes
    -----
    Calls from several threads run one after the other (two batch programs in flight
    at once can deadlock XLA:CPU).
    """
    for name, message in _REJECTED_OPTIONS.items():
        # Their "off" values (None, 0, False) are accepted, for drop-in calls.
        value = options.pop(name, None)
        if value is not None and value is not False and not (name == "verbose" and value == 0):
            raise (TypeError if name == "full_output" else ValueError)(message)
    if not callable(f):
        raise TypeError("`f` must be callable.")
    if nan_policy not in (None, "raise", "omit"):
        if nan_policy == "propagate":
            raise ValueError("`nan_policy='propagate'` is not supported by this function.")
        raise ValueError("nan_policy must be one of {None, 'raise', 'omit'}")
    if check_finite is None:
        check_finite = nan_policy is None

    batch = prepare_batch(
        f, xdata, ydata, p0, sigma, bounds, method, jac, mask, check_finite, nan_policy, options
    )
    return fit_batch(
        f,
        jac,
        batch,
        absolute_sigma=absolute_sigma,
        fits_per_chunk=fits_per_chunk,
        budget=memory_budget,
        progress=progress,
    )
