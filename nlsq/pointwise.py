"""Does a model act point by point along the data axis?

Padding the data to a size bucket is exact only for models whose value at a point does
not depend on the other points (``a * exp(-b * x)``, not ``x - x.mean()``). nlsq
checks this once per model, outside the compiled fit:

1. statically, from the model's jaxpr: every operation elementwise (scalars broadcast
   freely) proves it, at the cost of a trace;
2. otherwise numerically, with a jitted probe: the model's values on a slice of the
   data must not change when points are appended.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from nlsq.jaxprs import all_equations

if TYPE_CHECKING:
    # jax.extend takes ~15 ms to import; only the jaxpr checks need it.
    from jax.extend.core import Jaxpr

PROBE_LENGTH = 32

_ELEMENTWISE = frozenset(
    """
    abs acos acosh add and asin asinh atan atan2 atanh cbrt ceil clamp copy copy_p cos
    cosh digamma div eq erf erf_inv erfc exp exp2 expm1 floor ge gt igamma imag integer_pow
    is_finite le lgamma log log1p logistic lt max min mul ne neg nextafter not or pow real
    rem round rsqrt select_n sign sin sinh sqrt square stop_gradient sub tan tanh xor
    convert_element_type
    """.split()
)
_CALLS = frozenset({"pjit", "jit", "closed_call", "custom_jvp_call", "custom_vjp_call", "remat"})


def _elementwise_in(jaxpr: Jaxpr, data_inputs: list[bool]) -> bool:
    """Whether every operation that touches data-dependent values is elementwise.

    ``data_inputs`` marks which of ``jaxpr``'s inputs depend on the data; operations
    on the parameters alone (unpacking ``p``, say) may be anything.
    """
    from jax.extend.core import Var

    depends = {v for v, d in zip(jaxpr.invars, data_inputs, strict=True) if d}
    for eqn in jaxpr.eqns:
        touched = [isinstance(v, Var) and v in depends for v in eqn.invars]
        if not any(touched):
            continue
        depends.update(eqn.outvars)
        name = eqn.primitive.name
        if name in _ELEMENTWISE:
            continue
        if name == "broadcast_in_dim":
            operand = eqn.invars[0].aval
            if operand.ndim == 0 or operand.shape == eqn.outvars[0].aval.shape:
                continue
            return False
        if name in _CALLS:
            inner = [v for v in eqn.params.values() if hasattr(v, "eqns") or hasattr(v, "jaxpr")]
            if len(inner) == 1 and _elementwise_in(getattr(inner[0], "jaxpr", inner[0]), touched):
                continue
        return False
    return True


def _literals(jaxpr: Jaxpr) -> list:
    """Primitive names and literal constants, in order, sub-jaxprs included."""
    from jax.extend.core import Literal

    return [
        (
            eqn.primitive.name,
            repr([np.asarray(v.val).tolist() for v in eqn.invars if isinstance(v, Literal)]),
        )
        for eqn in all_equations(jaxpr)
    ]


def _statically_pointwise(f: Callable, probe: np.ndarray, p0: np.ndarray) -> bool:
    """Elementwise in the data, and no constant taken from the data's length.

    Tracing at two lengths catches ``x / x.size``: a Python constant that differs.
    """
    if probe.ndim != 1:
        return False
    longer = np.concatenate([probe, probe])
    traced = [jax.make_jaxpr(lambda x, p: f(x, *p))(x, p0) for x in (probe, longer)]
    outputs = traced[0].jaxpr.outvars
    return (
        len(outputs) == 1
        and outputs[0].aval.shape == probe.shape
        and _elementwise_in(traced[0].jaxpr, [True, False])
        and _literals(traced[0].jaxpr) == _literals(traced[1].jaxpr)
        and all(
            np.shape(a) == np.shape(b)
            for a, b in zip(traced[0].consts, traced[1].consts, strict=False)
        )
    )


def _numerically_pointwise(f: Callable, probe: np.ndarray, p0: np.ndarray) -> bool:
    length = probe.shape[-1]
    padded = np.concatenate([probe, np.repeat(probe[..., -1:], length, axis=-1)], axis=-1)
    evaluate = jax.jit(lambda x, p: jnp.asarray(f(x, *p)))
    short = np.asarray(evaluate(probe, p0))
    long = np.asarray(evaluate(padded, p0))
    return (
        short.shape == (length,)
        and long.shape == (2 * length,)
        and bool(np.allclose(long[:length], short, rtol=1e-10, atol=0, equal_nan=True))
    )


def acts_pointwise(f: Callable, xdata: np.ndarray, p0: np.ndarray) -> bool:
    """Whether ``f(x, *p0)[i]`` depends only on ``x[..., i]`` (see module docstring).

    Parameters
    ----------
    f : callable
        The model ``f(x, *params)``.
    xdata : ndarray
        The data; its last axis is the data axis.
    p0 : ndarray
        Parameter values to evaluate the model at.

    Returns
    -------
    bool
        False also when the model cannot be traced or evaluated on a slice: the fit
        then runs unpadded, where any error surfaces normally.
    """
    probe = np.ascontiguousarray(xdata[..., :PROBE_LENGTH])
    p0 = np.asarray(p0, dtype=probe.dtype)
    try:
        with jax.enable_x64(True):
            return _statically_pointwise(f, probe, p0) or _numerically_pointwise(f, probe, p0)
    except Exception:  # noqa: BLE001 - any failure: fit unpadded, where it surfaces
        return False


#: Verdicts of :func:`acts_pointwise_once`, by model identity and data rank.
_pointwise_verdicts: dict[tuple, bool] = {}


def acts_pointwise_once(f: Callable, key: Any, xdata: np.ndarray, p0: np.ndarray) -> bool:
    """:func:`acts_pointwise`, decided once per model identity ``key`` and data rank."""
    verdict_key = (key, xdata.ndim)
    if verdict_key not in _pointwise_verdicts:
        _pointwise_verdicts[verdict_key] = acts_pointwise(f, xdata, p0)
    return _pointwise_verdicts[verdict_key]
