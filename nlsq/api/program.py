"""Building, caching and running the compiled solver program.

The public functions validate their inputs eagerly (NumPy, scipy's messages), then
describe the problem as a residual function ``residual(x, data)`` plus a pytree of
arrays ``data``. Everything that would change the traced program goes into a
:class:`SolverSpec` and the cache key; everything else (data, starting point, bounds,
tolerances, scales, evaluation budget) is an argument of the jitted program, so new
values never trigger a compile.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nlsq import config
from nlsq.api.callback import dispatch as dispatch_callback
from nlsq.cache import disk_cache_threshold, ensure_disk_cache, programs, stats, track_compiles
from nlsq.covariance import leastsq_covariance, unscaled_covariance
from nlsq.errors import TraceTimeInputError, out_of_memory_advice, plain_input_errors
from nlsq.finite_diff import finite_difference_jacobian, minpack_forward_jacobian
from nlsq.host import UNTRACKED, host_callable
from nlsq.jacobian import autodiff_jacobian
from nlsq.loss import LossFunction, resolve_loss
from nlsq.solvers.progress import host_callback_hook
from nlsq.solvers.trf import TRFResult, trf

Residual = Callable[[jax.Array, Any], jax.Array]

#: What to do when the in-memory fit runs out of memory (the m x n Jacobian and its
#: working copies are the large part).
IN_MEMORY_ADVICE = (
    "The in-memory fit holds the full Jacobian (points x parameters) several times. "
    "Fit in chunks instead, with the same answer in O(chunk_size x parameters) memory: "
    "nlsq.curve_fit_large(f, xdata, ydata, ...) or nlsq.curve_fit(..., chunk_size=N); "
    "or lower the memory budget (setting large.memory_budget, environment variable "
    "NLSQ_MEMORY_BUDGET), above which curve_fit chunks large fits by itself."
)


@dataclass(frozen=True)
class SolverSpec:
    """Static configuration of a compiled program (part of the cache key)."""

    method: str
    bounded: bool
    loss: str | LossFunction
    jac_scale: bool
    jacobian_mode: str
    verbose: int
    with_covariance: bool
    dtype: str
    #: A user callback runs after each iteration; ``data`` is then ``(data, token)``
    #: with the token of :func:`nlsq.api.callback.callback_fit`.
    callback: bool = False
    #: Function evaluations one Jacobian costs (counted in nfev by MINPACK's lmdif).
    jac_nfev: int = 0
    #: Finite differences instead of ``jacobian``/autodiff: '2-point', '3-point',
    #: 'cs' (scipy's schemes, relative step ``diff_step``) or 'minpack' (MINPACK's
    #: forward difference, ``diff_step`` is ``epsfcn``).
    jac_scheme: str | None = None
    diff_step: float | tuple[float, ...] | None = None
    #: 'lm' with covariance: also return MINPACK's ``(fjac, ipvt, qtf)`` with it
    #: (``curve_fit(method='lm', full_output=True)``).
    lm_factors: bool = False


@dataclass(frozen=True)
class SolverInputs:
    """Dynamic inputs of a compiled program (never part of the cache key)."""

    x0: np.ndarray
    lb: np.ndarray
    ub: np.ndarray
    ftol: float
    xtol: float
    gtol: float
    max_nfev: int
    x_scale: np.ndarray
    f_scale: float


def _as_residual_vector(f: Any, dtype: np.dtype) -> jax.Array:
    """Check the model's output like scipy (at most 1-D, real) and cast it."""
    f = jnp.asarray(f)
    if f.ndim > 1:
        raise TraceTimeInputError(f"`fun` must return at most 1-d array_like. f0.shape: {f.shape}")
    if jnp.iscomplexobj(f):
        raise TraceTimeInputError(
            "`fun` returned complex values; residuals must be real.", TypeError
        )
    return jnp.atleast_1d(f).astype(dtype)


def _checked_loss(loss: LossFunction) -> LossFunction:
    def rho(z: jax.Array) -> jax.Array:
        try:
            value = jnp.asarray(loss(z))
        except Exception:  # noqa: BLE001 - a NumPy loss: evaluate it on the host
            on_host = host_callable(lambda z, _: loss(z), (3, z.shape[0]), "loss")
            value = on_host(z, None, jnp.asarray(UNTRACKED, jnp.int64))
        if value.shape != (3, z.shape[0]):
            raise TraceTimeInputError("The return value of `loss` callable has wrong shape.")
        return value

    return rho


_SCALAR_FIELDS = ("cost", "optimality", "initial_cost", "nfev", "njev", "status")


def _pack(raw: TRFResult) -> jax.Array:
    """All small outputs in one vector: fetching each array costs a host round trip."""
    dtype = raw.x.dtype
    scalars = jnp.stack([getattr(raw, name).astype(dtype) for name in _SCALAR_FIELDS])
    return jnp.concatenate([raw.x, raw.grad, raw.active_mask.astype(dtype), scalars])


class DeviceRows:
    """A result array left on the device until asked for, cut to the real rows.

    Copying the residuals and the Jacobian to the host costs more than the fit for
    large data, and ``curve_fit`` usually needs neither.
    """

    def __init__(self, array: jax.Array, rows: int | None) -> None:
        self._array = array
        self._rows = array.shape[0] if rows is None else rows
        self._host: np.ndarray | None = None

    def __len__(self) -> int:
        return self._rows

    def numpy(self) -> np.ndarray:
        """The rows as a float64 NumPy array (fetched once)."""
        if self._host is None:
            self._host = np.asarray(self._array, dtype=float)[: self._rows]
        return self._host


def _unpack(summary: np.ndarray, fun: DeviceRows, jac: DeviceRows, n: int) -> TRFResult:
    x, grad, active_mask, scalars = np.split(summary, [n, 2 * n, 3 * n])
    values = dict(zip(_SCALAR_FIELDS, scalars, strict=True))
    for name in ("nfev", "njev", "status"):
        values[name] = int(values[name])
    return TRFResult(
        x=x, grad=grad, active_mask=active_mask.astype(int), fun=fun, jac=jac, **values
    )


def solver_for(method: str) -> Callable[..., TRFResult]:
    """The solver function of a least-squares ``method``.

    Every solver takes TRF's arguments and returns a :class:`TRFResult`.
    """
    if method == "trf":
        return trf
    if method == "dogbox":
        from nlsq.solvers.dogbox import dogbox

        return dogbox
    if method == "lm":
        from nlsq.solvers.lm import lm

        return lm
    raise ValueError(f"Unknown method {method!r}.")


def _finite_difference(
    residual: Residual, data: Any, fun: Callable, keep: jax.Array | None, lb, ub, spec: SolverSpec
) -> Callable[[jax.Array], jax.Array]:
    """The Jacobian by the finite-difference scheme of ``spec``.

    Differences are taken of the unchecked residuals, so that a complex step gives
    complex values; ``fun(x)`` (real, checked) supplies ``f(x)``.
    """
    dtype = np.dtype(spec.dtype)

    def raw_fun(x: jax.Array) -> jax.Array:
        f = jnp.atleast_1d(jnp.asarray(residual(x, data)))
        if not jnp.iscomplexobj(x):
            f = f.astype(dtype)
        return f if keep is None else jnp.where(keep, f, 0.0)

    if spec.jac_scheme == "minpack":
        epsfcn = 0.0 if spec.diff_step is None else spec.diff_step

        def jac(x: jax.Array) -> jax.Array:
            return minpack_forward_jacobian(raw_fun, x, fun(x), epsfcn)

        return jac
    rel_step = None if spec.diff_step is None else jnp.asarray(spec.diff_step, dtype)

    def jac(x: jax.Array) -> jax.Array:
        return finite_difference_jacobian(raw_fun, x, fun(x), spec.jac_scheme, rel_step, lb, ub)

    return jac


def program_function(residual: Residual, jacobian: Residual | None, spec: SolverSpec) -> Callable:
    """One whole fit as a traceable function: solver iterations and, optionally, the
    unscaled covariance. :func:`build_program` jits it; batch fitting vmaps it first.

    Parameters
    ----------
    residual : callable
        ``residual(x, data) -> f`` written with ``jax.numpy``.
    jacobian : callable or None
        ``jacobian(x, data) -> J`` of shape (m, n); ``None`` differentiates
        ``residual`` by autodiff in ``spec.jacobian_mode``.
    spec : SolverSpec
        Static options.

    Returns
    -------
    callable
        ``program(x0, lb, ub, data, ftol, xtol, gtol, max_nfev, x_scale, f_scale,
        n_residuals)`` returning ``(summary, fun, jac, pcov_unscaled or None)`` (see
        :func:`_pack`). ``n_residuals`` is ``None``, or the number of real residuals
        when the data were padded to a size bucket. For 'lm' the covariance is
        ``leastsq``'s ``cov_x`` (NaN where ``R`` is singular), paired with MINPACK's
        ``(fjac, ipvt, qtf)`` when ``spec.lm_factors``.
    """
    dtype = np.dtype(spec.dtype)
    loss = resolve_loss(spec.loss)
    if callable(spec.loss):
        loss = _checked_loss(loss)

    def program(x0, lb, ub, data, ftol, xtol, gtol, max_nfev, x_scale, f_scale, n_residuals):
        solver_options = {}
        if spec.callback:
            data, token = data
            solver_options["callback"] = host_callback_hook(dispatch_callback, token)
        if spec.jac_nfev:
            solver_options["jac_nfev"] = spec.jac_nfev

        def model_residual(x: jax.Array) -> jax.Array:
            return _as_residual_vector(residual(x, data), dtype)

        m = jax.eval_shape(model_residual, x0).shape[0]
        n = x0.shape[0]
        # Padded data (size buckets): rows past n_residuals are zeroed, so they add
        # nothing to the cost, the gradient or J^T J.
        keep = None if n_residuals is None else jnp.arange(m) < n_residuals

        def fun(x: jax.Array) -> jax.Array:
            f = model_residual(x)
            return f if keep is None else jnp.where(keep, f, 0.0)

        if spec.jac_scheme is not None:
            jac = _finite_difference(residual, data, fun, keep, lb, ub, spec)
        elif jacobian is None:
            jac = autodiff_jacobian(fun, x0, m, spec.jacobian_mode)
        else:

            def jac(x: jax.Array) -> jax.Array:
                # scipy reads a callable jac's value as np.atleast_2d(jac(x)).
                J = jnp.atleast_2d(jnp.asarray(jacobian(x, data))).astype(dtype)
                if J.shape != (m, n):
                    raise TraceTimeInputError(
                        "The return value of `jac` has wrong shape: expected "
                        f"{(m, n)}, actual {J.shape}."
                    )
                return J if keep is None else jnp.where(keep[:, None], J, 0.0)

        raw = solver_for(spec.method)(
            fun,
            jac,
            x0,
            lb,
            ub,
            ftol,
            xtol,
            gtol,
            max_nfev,
            x_scale,
            f_scale,
            bounded=spec.bounded,
            loss=loss,
            jac_scale=spec.jac_scale,
            verbose=spec.verbose,
            residual_mask=keep,
            **solver_options,
        )
        pcov = None
        if spec.with_covariance and spec.method == "lm":
            # leastsq's cov_x, from the factorisation of the last Jacobian evaluated.
            pcov = leastsq_covariance(raw.fjac, raw.ipvt)
            if spec.lm_factors:
                pcov = (pcov, raw.fjac, raw.ipvt, raw.qtf)
        elif spec.with_covariance:
            pcov = unscaled_covariance(raw.jac, m if n_residuals is None else n_residuals)
        return _pack(raw), raw.fun, raw.jac, pcov

    return program


def build_program(residual: Residual, jacobian: Residual | None, spec: SolverSpec) -> Callable:
    """The jitted :func:`program_function`."""
    return jax.jit(program_function(residual, jacobian, spec))


def cached_program(
    model_key: Hashable | None,
    spec: SolverSpec,
    build: Callable[[], tuple[Residual, Residual | None]],
) -> Callable:
    """The compiled program for ``(model_key, spec)``, built on first use."""
    key = None
    if model_key is not None and config.get("cache_config.enable"):
        key = (model_key, spec)
        try:
            hash(key)
        except TypeError:
            key = None
    return programs.get_or_build(key, lambda: build_program(*build(), spec))


def run_program(
    program: Callable,
    inputs: SolverInputs,
    data: Any,
    dtype: np.dtype,
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
    real = np.dtype(dtype)
    ensure_disk_cache()
    with (
        jax.enable_x64(True),
        plain_input_errors(),
        out_of_memory_advice(IN_MEMORY_ADVICE),
        disk_cache_threshold(),
        track_compiles() as call,
    ):
        outputs = program(
            inputs.x0.astype(real),
            inputs.lb.astype(real),
            inputs.ub.astype(real),
            data,
            np.asarray(inputs.ftol, real),
            np.asarray(inputs.xtol, real),
            np.asarray(inputs.gtol, real),
            np.asarray(inputs.max_nfev, np.int64),
            inputs.x_scale.astype(real),
            np.asarray(inputs.f_scale, real),
            None if n_residuals is None else np.asarray(n_residuals, np.int64),
        )
        summary, fun, jac, pcov = outputs
        summary, pcov = jax.device_get((summary, pcov))
    raw = _unpack(
        summary, DeviceRows(fun, n_residuals), DeviceRows(jac, n_residuals), inputs.x0.size
    )
    return raw, pcov, stats.summary(call)
