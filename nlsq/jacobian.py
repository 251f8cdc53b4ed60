"""Jacobians by automatic differentiation: forward or reverse mode.

``jacobian_mode`` is resolved by precedence (argument > ``NLSQ_JACOBIAN_MODE`` >
config file > 'auto', see :mod:`nlsq.config`). 'auto' picks the mode from the
problem's shape at trace time, by the rule measured in ``docs/jacobian_mode.rst``, and
falls back to reverse mode for models that only define a reverse-mode rule
(``jax.custom_vjp``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import Array, lax

from nlsq import config
from nlsq.errors import TraceTimeInputError
from nlsq.jaxprs import all_equations

logger = logging.getLogger("nlsq")

JACOBIAN_MODES = ("auto", "fwd", "rev")

#: Elementwise primitives that XLA:CPU's fusion counts as cheap and so recomputes in
#: every fused consumer, though each costs about 10 ns an element in float64 (``exp``,
#: which it counts as expensive, 1.5 ns). In a vmapped ``jvp`` every Jacobian column
#: and every consumer of the Jacobian recomputed them: 16 sines and cosines per point
#: per Jacobian for ``a*sin(w*x + p) + c``, instead of 2.
RECOMPUTED_ON_CPU = frozenset({"sin", "cos", "tan"})


def resolve_jacobian_mode(argument: str | None) -> str:
    """The configured mode, ``'auto'``, ``'fwd'`` or ``'rev'``, by precedence.

    Raises
    ------
    ValueError
        If ``argument`` is not one of the modes.
    """
    mode, source = config.resolve("jacobian_mode", argument)
    logger.debug("jacobian_mode=%r (from %s)", mode, source)
    return mode


def automatic_mode(n: int, m: int) -> str:
    """Reverse mode when there are more parameters than residuals, else forward mode.

    Forward mode costs ``n`` Jacobian-vector products, reverse mode ``m`` vector-Jacobian
    products and the memory of ``m`` cotangents. Measured (``docs/jacobian_mode.rst``,
    2-core CPU): forward mode wins by 3x to 10^4x whenever ``m >= 3 n`` (reverse mode
    runs out of memory at ``m = 10^5``), reverse mode by 2x to 16x whenever
    ``n >= 3 m``, and at ``n = m`` either may win by up to 1.65x.
    """
    return "rev" if n > m else "fwd"


def _forward_unsupported(fun: Callable[[Array], Array], x0: Array) -> bool:
    """Whether ``fun`` rejects forward-mode differentiation (``custom_vjp``)."""
    try:
        jax.eval_shape(jax.jacfwd(fun), x0)
    except TypeError as error:
        return "custom_vjp" in str(error)
    return False


def _recomputes_when_fused(fun: Callable[[Array], Array], x: Array) -> bool:
    """Whether XLA would recompute ``fun``'s costly elementwise work per Jacobian column."""
    if jax.default_backend() != "cpu":
        return False
    jaxpr = jax.make_jaxpr(fun)(jax.ShapeDtypeStruct(x.shape, x.dtype)).jaxpr
    return not RECOMPUTED_ON_CPU.isdisjoint(eqn.primitive.name for eqn in all_equations(jaxpr))


def forward_jacobian(fun: Callable[..., Array]) -> Callable[..., Array]:
    """``jac(x, *args)``: the Jacobian of ``fun`` in its first argument, by forward mode.

    Equal to ``jax.jacfwd(fun)``. For a model with sines or cosines on a CPU, the
    columns are computed one per loop step from one linearization instead: the
    linearization's values (the model's sines and cosines) are then loop operands,
    computed once, where the vmapped form let XLA recompute them in every column
    (see ``RECOMPUTED_ON_CPU``; a fit of ``a*sin(w*x + p) + c`` at 10^4 points took
    2.9 ms instead of 7.7). Other models keep ``jax.jacfwd``: reading the
    linearization once per column costs more than it saves for them (30 parameters
    at 10^5 points: 1.3 s against 0.93 s).
    """
    vmapped = jax.jacfwd(fun)

    def jac(x: Array, *args: Any) -> Array:
        def at(p: Array) -> Array:
            return fun(p, *args)

        if not _recomputes_when_fused(at, x):
            return vmapped(x, *args)
        _, tangent_map = jax.linearize(at, x)
        columns = lax.map(tangent_map, jnp.eye(x.shape[0], dtype=x.dtype))
        return jnp.moveaxis(columns, 0, -1)

    return jac


def autodiff_jacobian(
    fun: Callable[[Array], Array], x0: Array, m: int, mode: str
) -> Callable[[Array], Array]:
    """``jac(x)`` of shape (m, n) for ``fun`` by the requested mode (trace-time choice).

    Raises
    ------
    ValueError
        If ``mode='fwd'`` is forced on a model that supports reverse mode only.
    """
    n = x0.shape[0]
    if mode == "auto":
        chosen = automatic_mode(n, m)
        if chosen == "fwd" and _forward_unsupported(fun, x0):
            chosen = "rev"
        logger.debug(
            "jacobian_mode='auto' chose %r for n=%d parameters, m=%d residuals", chosen, n, m
        )
        mode = chosen
    elif mode == "fwd" and _forward_unsupported(fun, x0):
        raise TraceTimeInputError(
            "jacobian_mode='fwd' cannot differentiate this model: it defines only a "
            "reverse-mode rule (jax.custom_vjp). Use jacobian_mode='rev' or 'auto'."
        )
    return forward_jacobian(fun) if mode == "fwd" else jax.jacrev(fun)
