"""A batch of fits, validated: per-fit errors instead of exceptions, one model check."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from nlsq.cache import ensure_disk_cache
from nlsq.host import runs_on_host
from nlsq.identity import model_key
from nlsq.pointwise import acts_pointwise_once
from nlsq.prepare.arguments import (
    finite_difference_options,
    initialize_feasible,
    number_of_parameters,
    prepare_curve_fit,
)
from nlsq.prepare.batch_data import (
    NONFINITE_MESSAGE,
    BatchData,
    batch_weights,
    compact,
    flagged_points,
    needs_compaction,
    normalize_batch_data,
)
from nlsq.prepare.options import ValidatedOptions
from nlsq.program.model import model_runs_on_host, traced_jacobian
from nlsq.program.padding import pad_batch_tail, padded_length
from nlsq.program.spec import BatchLayout, SolverSpec
from nlsq.scipy_types import is_bounds


def _parse_bounds(bounds: Any, n: int, n_fits: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """Lower and upper bounds as (B, n) arrays, and whether any is per fit."""
    if is_bounds(bounds):
        bounds = (bounds.lb, bounds.ub)
    if len(bounds) != 2:
        raise ValueError("`bounds` must contain 2 elements.")
    lb, ub = (np.asarray(b, dtype=float) for b in bounds)
    per_fit = lb.ndim == 2 or ub.ndim == 2
    out = []
    for b in (lb, ub):
        if b.ndim == 0:
            b = np.full(n, b)
        if b.shape not in ((n,), (n_fits, n)):
            raise ValueError("Inconsistent shapes between bounds and `x0`.")
        out.append(np.broadcast_to(b, (n_fits, n)))
    return out[0], out[1], per_fit


def _initial_guesses(p0: Any, lb: np.ndarray, ub: np.ndarray, n_fits: int) -> np.ndarray:
    if p0 is None:
        return np.stack(
            [initialize_feasible(lower, upper) for lower, upper in zip(lb, ub, strict=True)]
        )
    p0 = np.asarray(p0, dtype=float)
    return np.array(np.broadcast_to(p0, (n_fits, lb.shape[1])))


def _parameter_count(f: Callable, p0: Any, n_fits: int) -> int:
    if p0 is None:
        return number_of_parameters(f)
    p0 = np.asarray(p0)
    if np.iscomplexobj(p0):
        raise ValueError("`x0` must be real.")
    if p0.ndim == 2 and p0.shape[0] == n_fits:
        return p0.shape[1]
    if p0.ndim <= 1:
        return np.atleast_1d(p0).size
    raise ValueError(f"`p0` must have shape (n,) or ({n_fits}, n); got {p0.shape}.")


def _nonfinite(values: np.ndarray) -> np.ndarray:
    flags = np.isfinite(values)
    return np.logical_not(flags, out=flags)


def _fit_errors(
    data: BatchData,
    p0: np.ndarray,
    lb: np.ndarray,
    ub: np.ndarray,
    *,
    method: str | None,
    check_finite: bool,
    nan_policy: str | None,
) -> dict[int, str]:
    """The exception message ``curve_fit`` would raise for each fit alone, in its order.

    Also applies ``nan_policy='omit'`` to ``data.valid``.
    """
    n_fits, n = p0.shape
    errors: dict[int, str] = {}

    def flag(condition: np.ndarray, message: str) -> None:
        for index in np.flatnonzero(condition):
            errors.setdefault(int(index), message)

    bounded = (np.isfinite(lb) | np.isfinite(ub)).any(axis=1)
    if method == "lm":
        flag(
            bounded,
            "Method 'lm' only works for unconstrained problems. Use 'trf' or 'dogbox' instead.",
        )
    valid = data.valid
    if check_finite:
        nonfinite = np.zeros(n_fits, bool)
        for rows, flags in flagged_points(data, _nonfinite):
            nonfinite[rows] = flags.any(axis=1)
        flag(nonfinite, NONFINITE_MESSAGE)
    flag(~valid.any(axis=1), "`ydata` must not be empty!")
    if not check_finite and nan_policy is not None:
        valid = valid.copy()
        for rows, has_nan in flagged_points(data, np.isnan):
            if nan_policy == "raise" and has_nan.any():
                raise ValueError("The input contains nan values")
            valid[rows] &= ~has_nan
        data.valid = valid
        flag(~valid.any(axis=1), "`ydata` must not be empty!")
    counts = valid.sum(axis=1)
    if method is None:
        # scipy's default for these fits would be 'lm', which refuses them.
        for index in np.flatnonzero(~bounded & (n > counts) & (counts > 0)):
            m = int(counts[index])
            errors.setdefault(
                int(index),
                f"Improper input: func input vector length N={n} must not exceed "
                f"func output vector length M={m}"
                if m == 1
                else f"The number of func parameters={n} must not exceed the number of "
                f"data points={m}",
            )
    flag((lb >= ub).any(axis=1), "Each lower bound must be strictly less than each upper bound.")
    flag(~((p0 >= lb) & (p0 <= ub)).all(axis=1), "Initial guess is outside of provided bounds")
    return errors


def _batch_options(
    f: Callable,
    jac: Any,
    data: BatchData,
    p0: np.ndarray,
    lb: np.ndarray,
    ub: np.ndarray,
    method: str | None,
    options: dict[str, Any],
    representative: int | None,
) -> tuple[ValidatedOptions, Any]:
    """Options checked by ``curve_fit``'s own validation, on one representative fit.

    This gives the batch exactly ``curve_fit``'s messages and defaults (``'lm'`` runs
    with ``leastsq``'s). Without a valid fit, a neutral stand-in is validated.
    """
    if representative is None:
        size = max(p0.shape[1] + 1, 2)
        x_rep, y_rep = np.zeros(size), np.zeros(size)
        p_rep, bounds = np.zeros(p0.shape[1]), (-np.inf, np.inf)
    else:
        real = data.valid[representative]
        x_rep = data.xdata[representative] if data.x_per_fit else data.xdata
        x_rep, y_rep = x_rep[..., real], data.ydata[representative][real]
        p_rep = p0[representative]
        bounds = (lb[representative], ub[representative])
    prepared = prepare_curve_fit(
        f, x_rep, y_rep, p_rep, None, False, bounds, method, jac, None, options
    )
    return finite_difference_options(prepared, jac, False), prepared.leastsq


def _check_traceable(f: Callable, jac: Any, key: Any, x0: np.ndarray, xdata: np.ndarray) -> None:
    """Refuse NumPy models: a batch vmaps the model, so it must trace with JAX."""
    if model_runs_on_host(f, key, x0, xdata):
        raise TypeError(
            "curve_fit_batch needs a model written with jax.numpy (this one runs only "
            "on the host); fit NumPy models one at a time with curve_fit."
        )
    if callable(jac) and runs_on_host(
        traced_jacobian(jac, False), ("curve_fit jac", key, model_key(jac)), x0, xdata
    ):
        raise TypeError("curve_fit_batch needs `jac` written with jax.numpy.")


@dataclass
class PreparedBatch:
    """A validated batch: data on a common length, per-fit inputs and the fits to run."""

    data: BatchData
    n: int
    initial: np.ndarray
    lb: np.ndarray
    ub: np.ndarray
    bounds_per_fit: bool
    counts: np.ndarray
    padded: bool
    transform: np.ndarray | None
    errors: dict[int, str]
    options: ValidatedOptions
    leastsq: Any

    @property
    def n_fits(self) -> int:
        return self.data.ydata.shape[0]

    @functools.cached_property
    def run(self) -> np.ndarray:
        """Indices of the fits that run (those without an input error)."""
        return np.array([i for i in range(self.n_fits) if i not in self.errors], dtype=np.int64)

    @property
    def layout(self) -> BatchLayout:
        return BatchLayout(
            self.data.x_per_fit, self.data.sigma_per_fit, self.bounds_per_fit, self.padded
        )

    @property
    def bounded(self) -> bool:
        """Whether the program is bounded: one bounded fit makes it so. Unbounded fits in
        it take the same steps (the box never cuts them) up to rounding."""
        run = self.run
        finite = np.isfinite(self.lb[run]) | np.isfinite(self.ub[run])
        return self.options.method != "lm" and bool(finite.any())

    @property
    def own_values(self) -> int:
        """Values of one fit's own inputs (data and weights), for the memory estimate."""
        size = self.data.size
        x = self.data.xdata[0].size if self.data.x_per_fit else 0
        weights = self.transform[0].size if self.data.sigma_per_fit else 0
        return size + x + weights

    def device_inputs(self) -> dict[str, Any]:
        """The program's inputs for every fit.

        Shared inputs and the per-fit parameters are in the working dtype; the per-fit
        data and weights stay as they are (not copied: a memory map stays on disk) and
        are cast chunk by chunk as they run, so a large batch needs no second copy.
        """
        real = self.options.dtype
        layout = self.layout

        def shared_cast(array: np.ndarray | None, per_fit: bool) -> np.ndarray | None:
            return array if (array is None or per_fit) else array.astype(real)

        return {
            "x0": self.initial.astype(real),
            "lb": (self.lb if self.bounds_per_fit else self.lb[0]).astype(real),
            "ub": (self.ub if self.bounds_per_fit else self.ub[0]).astype(real),
            "xdata": shared_cast(self.data.xdata, layout.x_per_fit),
            "ydata": self.data.ydata,
            "transform": shared_cast(self.transform, layout.sigma_per_fit),
            "n_residuals": self.counts.astype(np.int64),
        }


def prepare_batch(
    f: Callable,
    xdata: Any,
    ydata: Any,
    p0: Any,
    sigma: Any,
    bounds: Any,
    method: str | None,
    jac: Any,
    mask: Any,
    check_finite: bool,
    nan_policy: str | None,
    options: dict[str, Any],
) -> PreparedBatch:
    """Validate the inputs, find each fit's own errors and lay the data out for the
    program: compacted, padded to a common length when lengths differ, weighted."""
    data = normalize_batch_data(xdata, ydata, sigma, mask)
    n_fits = data.ydata.shape[0]
    if n_fits == 0:
        raise ValueError("`ydata` must hold at least one fit.")
    n = _parameter_count(f, p0, n_fits)
    lb, ub, bounds_per_fit = _parse_bounds(bounds, n, n_fits)
    initial = _initial_guesses(p0, lb, ub, n_fits)
    errors = _fit_errors(
        data, initial, lb, ub, method=method, check_finite=check_finite, nan_policy=nan_policy
    )
    if needs_compaction(data.valid):
        compact(data)
    counts = data.valid.sum(axis=1)
    padded = bool((counts < data.size).any())
    representative = next((i for i in range(n_fits) if i not in errors), None)
    validated, leastsq = _batch_options(
        f, jac, data, initial, lb, ub, method, options, representative
    )
    if representative is not None:
        key = model_key(f)
        x_rep = data.xdata[representative] if data.x_per_fit else data.xdata
        _check_traceable(f, jac, key, initial[representative], x_rep)
        if padded and not acts_pointwise_once(f, key, x_rep, initial[representative]):
            raise ValueError(
                "Fits of different lengths (a list of arrays, a `mask` or "
                "nan_policy='omit') are padded to a common length, which needs a model "
                "whose value at a point depends only on that point's x."
            )
    if padded:
        pad_batch_tail(data, counts, padded_length(data.size))
    transform = batch_weights(data, counts, errors)
    return PreparedBatch(
        data,
        n,
        initial,
        lb,
        ub,
        bounds_per_fit,
        counts,
        padded,
        transform,
        errors,
        validated,
        leastsq,
    )


#: Parameters up to which a 'trf' batch factorises with :mod:`nlsq.small_linalg`
#: (vectorised across the fits) instead of one LAPACK call per fit; its unrolled
#: Jacobi sweeps grow as the square of the parameters, and so does the compile time.
SMALL_LINALG_MAX_PARAMETERS = 8

#: Fits from which a batch uses :mod:`nlsq.small_linalg` when every process compiles
#: its programs (no persistent cache). On XLA:CPU (64-point gaussians, 3 parameters,
#: quiet 2-core EPYC, 10,000 fits) its fits run 2.7x faster than LAPACK's, since its
#: chunks also run on both cores (see :func:`nlsq.execute.batched.chunk_workers`), but
#: its program takes about 0.8 s (bounded about 1 s) longer to compile: a first call
#: breaks even at about 47,000 fits unbounded and 56,000 bounded.
SMALL_LINALG_MIN_FITS = 50_000

#: The same with the persistent cache in use: the larger program is compiled once per
#: machine, and a later process's first call takes as long with either program (0.6-0.7
#: s for 10,000 fits), so it pays wherever it is faster by a useful margin: 2,048 fits
#: run in 28 ms instead of 82 (at 512, 15 against 18 ms).
SMALL_LINALG_MIN_FITS_CACHED = 2_048


def small_linalg_min_fits() -> int:
    """Fits from which a 'trf' batch of few parameters factorises with
    :mod:`nlsq.small_linalg`: fewer when its compiled program is kept on disk."""
    if ensure_disk_cache() is None:
        return SMALL_LINALG_MIN_FITS
    return SMALL_LINALG_MIN_FITS_CACHED


def batch_solver_spec(batch: PreparedBatch) -> SolverSpec:
    """The static configuration of the program, as :func:`nlsq.execute.dense.solve`
    builds it for a single fit (no verbose output, no callback, with covariance), with
    small-matrix factorisations for many fits of few parameters."""
    options = batch.options
    return SolverSpec(
        method=options.method,
        bounded=batch.bounded,
        loss=options.loss,
        jac_scale=options.jac_scale,
        jacobian_mode=options.jacobian_mode,
        verbose=0,
        with_covariance=True,
        dtype=np.dtype(options.dtype).name,
        jac_nfev=options.jac_nfev,
        jac_scheme=options.jac_scheme,
        diff_step=options.diff_step,
        small_linalg=options.method == "trf"
        and batch.n <= SMALL_LINALG_MAX_PARAMETERS
        and batch.run.size >= small_linalg_min_fits(),
    )
