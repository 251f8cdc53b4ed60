"""Which plan a ``curve_fit`` call runs: in memory, or chunked without the Jacobian."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from nlsq.identity import model_key
from nlsq.plan.budget import checked_chunk_size, in_memory_bytes, memory_budget_of
from nlsq.pointwise import acts_pointwise
from nlsq.prepare.arguments import PreparedFit
from nlsq.program.model import model_runs_on_host

logger = logging.getLogger("nlsq")


def chunked_fit_reason(
    f: Callable, jac: Any, prepared: PreparedFit, chunk_size: int | None
) -> str | None:
    """Why the fit of ``curve_fit``'s prepared inputs cannot run chunked (None: it can)."""
    options = prepared.options
    if prepared.leastsq is not None or options.method != "trf":
        return "method='trf' only"
    if jac is not None:
        return "the autodiff Jacobian only (jac=None)"
    if prepared.sigma_kind == "covariance":
        return "1-D sigma only"
    xdata = prepared.xdata
    if not isinstance(xdata, np.ndarray) or xdata.shape[-1:] != prepared.ydata.shape:
        return "xdata as an array with the data axis last"
    if options.verbose == 2:
        return "verbose < 2"
    if model_runs_on_host(f, model_key(f), options.inputs.x0, xdata):
        return "a model written with jax.numpy"
    return None


def use_chunked(f: Callable, jac: Any, prepared: PreparedFit, chunk_size: int | None) -> bool:
    """Whether ``curve_fit`` runs chunked: when asked (``chunk_size``), or when the
    in-memory fit's estimated memory exceeds the budget and the problem allows it.

    Raises
    ------
    ValueError
        If ``chunk_size`` is given for a problem the chunked solver cannot fit.
    """
    chunk_size = checked_chunk_size(chunk_size)
    m, n = prepared.ydata.size, prepared.n_params
    itemsize = np.dtype(prepared.options.dtype).itemsize
    # The common case first: a fit that fits the budget (this runs on every call).
    if chunk_size is None and in_memory_bytes(m, n, itemsize) <= memory_budget_of():
        return False
    reason = chunked_fit_reason(f, jac, prepared, chunk_size)
    if chunk_size is None and reason is not None:
        return False
    if reason is not None:
        raise ValueError(
            f"chunk_size: the chunked solver supports {reason}; remove chunk_size to fit in memory."
        )
    pointwise = acts_pointwise(f, prepared.xdata, prepared.options.inputs.x0)
    if not pointwise and chunk_size is not None:
        raise ValueError(
            "chunk_size: the model must act point by point along the data axis (its value "
            "at a point must depend on that point only); remove chunk_size to fit in memory."
        )
    if pointwise and chunk_size is None:
        logger.info(
            "curve_fit: %d points x %d parameters exceed the memory budget in memory "
            "(about %.0f MiB); fitting in chunks",
            m,
            n,
            in_memory_bytes(m, n, itemsize) / 2**20,
        )
    return pointwise
