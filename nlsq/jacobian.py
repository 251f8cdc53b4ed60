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

import jax
from jax import Array

from nlsq import config
from nlsq.errors import TraceTimeInputError

logger = logging.getLogger("nlsq")

JACOBIAN_MODES = ("auto", "fwd", "rev")


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
    return jax.jacfwd(fun) if mode == "fwd" else jax.jacrev(fun)
