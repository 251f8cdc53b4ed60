"""Calling a compiled program once and fetching its small results to NumPy."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from nlsq.cache import stats
from nlsq.program.context import program_run
from nlsq.program.spec import SolverInputs
from nlsq.solvers.sparse import SparseJacobian
from nlsq.solvers.trf import TRFResult

if TYPE_CHECKING:
    from scipy.sparse import csr_matrix

#: What to do when the in-memory fit runs out of memory (the m x n Jacobian and its
#: working copies are the large part).
IN_MEMORY_ADVICE = (
    "The in-memory fit holds the full Jacobian (points x parameters) several times. "
    "Fit in chunks instead, with the same answer in O(chunk_size x parameters) memory: "
    "nlsq.curve_fit_large(f, xdata, ydata, ...) or nlsq.curve_fit(..., chunk_size=N); "
    "or lower the memory budget (setting large.memory_budget, environment variable "
    "NLSQ_MEMORY_BUDGET), above which curve_fit chunks large fits by itself."
)


SCALAR_FIELDS = ("cost", "optimality", "initial_cost", "nfev", "njev", "status")


def pack_summary(raw: TRFResult) -> jax.Array:
    """All small outputs in one vector: fetching each array costs a host round trip."""
    dtype = raw.x.dtype
    scalars = jnp.stack([getattr(raw, name).astype(dtype) for name in SCALAR_FIELDS])
    return jnp.concatenate([raw.x, raw.grad, raw.active_mask.astype(dtype), scalars])


def summary_length(n: int) -> int:
    """Length of :func:`pack_summary`'s vector for ``n`` parameters."""
    return 3 * n + len(SCALAR_FIELDS)


class DeviceRows:
    """A result array left on the device until asked for, cut to the real rows.

    Copying the residuals and the Jacobian to the host costs more than the fit for
    large data, and ``curve_fit`` usually needs neither.
    """

    def __init__(self, array: jax.Array, rows: int | None) -> None:
        self._array = array
        #: The device value itself (a host operator's handle, for instance).
        self.array = array
        self._rows = array.shape[0] if rows is None else rows
        self._host: np.ndarray | None = None

    def __len__(self) -> int:
        return self._rows

    def numpy(self) -> np.ndarray:
        """The rows as a float64 NumPy array (fetched once)."""
        if self._host is None:
            self._host = np.asarray(self._array, dtype=float)[: self._rows]
        return self._host


class DeviceSparse:
    """A sparse Jacobian left on the device until asked for; scipy's CSR matrix
    on the host."""

    def __init__(self, jac: SparseJacobian) -> None:
        self._jac = jac
        self._host: csr_matrix | None = None

    def __len__(self) -> int:
        return self._jac.shape[0]

    def numpy(self) -> csr_matrix:
        """The matrix as ``scipy.sparse.csr_matrix`` (fetched once)."""
        if self._host is None:
            from scipy.sparse import csr_matrix

            values, rows, cols = jax.device_get((self._jac.values, self._jac.rows, self._jac.cols))
            self._host = csr_matrix(
                (np.asarray(values, dtype=float), (rows, cols)), shape=self._jac.shape
            )
        return self._host


def unpack_summary(summary: np.ndarray, fun: DeviceRows, jac: DeviceRows, n: int) -> TRFResult:
    x, grad, active_mask = summary[:n], summary[n : 2 * n], summary[2 * n : 3 * n]
    values = dict(zip(SCALAR_FIELDS, summary[3 * n :].tolist(), strict=True))
    for name in ("nfev", "njev", "status"):
        values[name] = int(values[name])
    return TRFResult(
        x=x, grad=grad, active_mask=active_mask.astype(int), fun=fun, jac=jac, **values
    )


def run_program(
    program: Callable,
    inputs: SolverInputs,
    data: Any,
    n_residuals: int | None = None,
) -> tuple[TRFResult, np.ndarray | None, dict[str, Any]]:
    """Call the compiled program once and fetch its small results to NumPy.

    64-bit mode is switched on for this call only; compilations it causes are
    counted, and may be loaded from or stored in the persistent cache.

    Returns
    -------
    raw : TRFResult
        ``fun`` and ``jac`` are :class:`DeviceRows` (fetched on demand, cut back to
        the real residuals); the other fields are NumPy values.
    pcov : ndarray or None
        Unscaled covariance, when the program computes it.
    cache_stats : dict
        This call's compile figures and the process totals.
    """
    n = inputs.x0.size
    with program_run(IN_MEMORY_ADVICE) as call:
        packed, fun, jac, factors = program(
            inputs.packed(n_residuals), data, padded=n_residuals is not None
        )
        # One fetch for the summary and the covariance: each fetch is a round trip.
        packed = np.asarray(packed)
        if factors is not None:
            factors = jax.device_get(factors)
    summary = packed[: summary_length(n)]
    pcov = packed[summary_length(n) :].reshape(n, n) if packed.size > summary_length(n) else None
    if factors is not None:
        pcov = (pcov, *factors)
    jac_rows = (
        DeviceSparse(jac) if isinstance(jac, SparseJacobian) else DeviceRows(jac, n_residuals)
    )
    raw = unpack_summary(summary, DeviceRows(fun, n_residuals), jac_rows, n)
    return raw, pcov, stats.summary(call)
