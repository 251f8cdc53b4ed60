"""The model as the solvers see it: ``residual(p, data)`` and ``jacobian(p, data)``.

Adapters from the user's ``f(x, *p)`` (and ``jac``) to the residual functions the
compiled program differentiates and solves: weighting by ``sigma``, the output checks
scipy makes, and the residuals of one chunk of a large fit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import numpy as np

from nlsq.errors import TraceTimeInputError
from nlsq.host import UNTRACKED, host_callable, runs_on_host
from nlsq.loss import LossFunction


def _weighted(kind: str, transform: jax.Array | None, values: jax.Array) -> jax.Array:
    if kind == "diagonal":
        return transform.reshape(transform.shape + (1,) * (values.ndim - 1)) * values
    if kind == "covariance":
        return jsl.solve_triangular(transform, values, lower=True)
    return values


def model_residual(model_at: Callable, kind: str) -> Callable:
    """``residual(p, data)``: weighted ``model - ydata``.

    ``model_at(p, xdata, *extra)`` evaluates the model; ``data`` is ``(xdata, ydata,
    transform, *extra)`` (``extra``: the host token of a NumPy model).
    """

    def residual(p: jax.Array, data: tuple) -> jax.Array:
        xdata, ydata, transform, *extra = data
        model = jnp.asarray(model_at(p, xdata, *extra))
        try:
            np.broadcast_shapes(model.shape, ydata.shape)
        except ValueError as error:
            raise TraceTimeInputError(
                f"The model returned shape {model.shape}, which does not match "
                f"`ydata` of shape {ydata.shape}."
            ) from error
        return _weighted(kind, transform, model - ydata)

    return residual


def model_jacobian(jac_at: Callable, kind: str) -> Callable:
    """``jacobian(p, data)``: the model's Jacobian weighted as the residuals."""

    def jacobian(p: jax.Array, data: tuple) -> jax.Array:
        xdata, _, transform, *extra = data
        return _weighted(kind, transform, jnp.asarray(jac_at(p, xdata, *extra)))

    return jacobian


def traced_model(f: Callable) -> Callable:
    return lambda p, xdata: f(xdata, *p)


def model_runs_on_host(
    f: Callable, key: str | None, p0: np.ndarray, xdata: Any, probe: dict | None = None
) -> bool:
    """Whether the curve model ``f(x, *p)`` must run on the host (NumPy code), decided
    once per model identity ``key`` (None: decided again on every call).

    See :func:`nlsq.host.runs_on_host` for ``probe``.
    """
    verdict_key = None if key is None else ("curve_fit", key)
    return runs_on_host(traced_model(f), verdict_key, p0, xdata, probe=probe, written_by=f)


def traced_jacobian(jac: Callable, col_deriv: bool) -> Callable:
    if col_deriv:
        return lambda p, xdata: jnp.transpose(jnp.asarray(jac(xdata, *p)))
    return lambda p, xdata: jac(xdata, *p)


def as_residual_vector(f: Any, dtype: np.dtype) -> jax.Array:
    """Check the model's output like scipy (at most 1-D, real) and cast it."""
    f = jnp.asarray(f)
    if f.ndim > 1:
        raise TraceTimeInputError(f"`fun` must return at most 1-d array_like. f0.shape: {f.shape}")
    if jnp.iscomplexobj(f):
        raise TraceTimeInputError(
            "`fun` returned complex values; residuals must be real.", TypeError
        )
    return jnp.atleast_1d(f).astype(dtype)


def checked_loss(loss: LossFunction) -> LossFunction:
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


def chunk_residual(f: Callable, has_sigma: bool) -> Callable:
    def residual(p: jax.Array, chunk: tuple) -> jax.Array:
        x, y, *w = chunk
        model = jnp.asarray(f(x, *p))
        if model.shape != y.shape:
            try:
                model = jnp.broadcast_to(model, y.shape)
            except ValueError as error:
                raise TraceTimeInputError(
                    f"The model returned shape {model.shape} for a chunk of "
                    f"{y.shape[0]} points; it must return one value per point."
                ) from error
        r = model - y
        return w[0] * r if has_sigma else r

    return residual
