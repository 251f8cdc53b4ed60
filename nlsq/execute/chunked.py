"""Running a chunked fit: data resident on the devices (sharded) or streamed from the
host, ``J^T J`` accumulated chunk by chunk inside one compiled program."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from nlsq.cache import stats
from nlsq.jacobian import forward_jacobian
from nlsq.loss import evaluate_loss, resolve_loss, scale_for_robust_loss
from nlsq.plan.budget import MAX_CHUNK
from nlsq.plan.chunked import ChunkedPlan
from nlsq.plan.placement import place
from nlsq.prepare.options import ValidatedOptions
from nlsq.program.build import chunked_program
from nlsq.program.callback import CallbackWrapper
from nlsq.program.compiler import jit_program
from nlsq.program.context import device_scope, program_run
from nlsq.program.model import chunk_residual
from nlsq.program.sources import ArrayData, IterableData, resident_blocks
from nlsq.program.spec import Layout
from nlsq.program.streaming import StreamedFit, registered_fit
from nlsq.solvers.termination import INITIAL_NOT_FINITE, TERMINATION_MESSAGES

logger = logging.getLogger("nlsq")

#: What to do when a chunked fit runs out of memory.
CHUNKED_ADVICE = (
    "Use a smaller chunk_size, or a lower memory budget (memory_budget=..., setting "
    "large.memory_budget, environment variable NLSQ_MEMORY_BUDGET), from which the "
    "chunk size is chosen; stream=True keeps the data on the host."
)


def fit_chunked(
    f: Callable, data: ArrayData | IterableData, options: ValidatedOptions, plan: ChunkedPlan
) -> dict[str, Any]:
    """Run the chunked fit of ``plan`` on host data (see :func:`nlsq.curve_fit_large`).

    Returns
    -------
    dict
        The fit's outputs for :func:`nlsq.finish.assemble.finish_fit`.

    Raises
    ------
    ValueError
        If the residuals at ``p0`` are not finite.
    ChunkError
        For a bad chunk (re-raised after the fit stopped).
    """
    dtype = np.dtype(options.dtype)
    n = options.inputs.x0.size
    stream, mesh, layout, m_total = plan.stream, plan.mesh, plan.layout, plan.m_total
    program = chunked_program(f, plan.spec)
    if stream:
        blocks, counts = (None, None, None), np.asarray([data.m], np.int64)
        placed = (blocks, counts)
    else:
        local_layout = Layout(plan.local_blocks, layout.n_chunks, layout.chunk_size)
        host_blocks, counts = resident_blocks(data, local_layout, dtype)
        # 64-bit mode is thread-local: without it device_put would round to float32.
        with device_scope(CHUNKED_ADVICE):
            placed = place((host_blocks, counts), mesh)
        del host_blocks
    logger.info(
        "large fit: %d points, %d parameters, %s, %d block(s) x %d chunk(s) x %d points",
        m_total,
        n,
        "streamed from the host" if stream else "resident on the device(s)",
        layout.n_blocks,
        layout.n_chunks,
        layout.chunk_size,
    )
    callback = None if options.callback is None else CallbackWrapper(options.callback)
    context = StreamedFit(data if stream else None, layout, dtype, callback)
    inputs = options.inputs
    with registered_fit(context) as token, program_run(CHUNKED_ADVICE) as call:
        out = program(
            inputs.x0.astype(dtype),
            inputs.lb.astype(dtype),
            inputs.ub.astype(dtype),
            placed[0],
            placed[1],
            np.asarray(token, np.int64),
            *inputs.controls(dtype),
        )
        out = jax.device_get(out)
    if context.error is not None:
        raise context.error
    if callback is not None:
        callback.raise_error()
    status = int(out["status"])
    if status == INITIAL_NOT_FINITE:
        raise ValueError("Residuals are not finite in the initial point.")
    logger.info(
        "large fit: %s nfev %d, cost %.6e, %.2f s",
        TERMINATION_MESSAGES[status],
        int(out["nfev"]),
        float(out["cost"]),
        time.perf_counter() - context.start,
    )
    popt = np.asarray(out["x"], dtype=float)
    return {
        **{name: out[name] for name in ("x", "cost", "optimality", "active_mask", "pcov")},
        **{name: out[name] for name in ("nfev", "njev", "status")},
        "n_points": m_total,
        "cache_stats": stats.summary(call),
        "residuals": LazyRows(f, data, popt, options, jacobian=False),
        "jac": LazyRows(f, data, popt, options, jacobian=True),
        "lm_factors": None,
    }


class LazyRows:
    """Residuals (or the Jacobian) at ``popt``, computed chunk by chunk on request.

    The Jacobian is loss-scaled as the in-memory fit's (scipy's ``jac``: ``J^T J`` is
    the Gauss-Newton Hessian of the robust cost). With several processes the rows of
    every process are gathered, in process order.
    """

    def __init__(self, f, data, popt, options: ValidatedOptions, jacobian: bool) -> None:
        self._f, self._data, self._popt = f, data, popt
        self._dtype = np.dtype(options.dtype)
        self._loss, self._f_scale = resolve_loss(options.loss), options.inputs.f_scale
        self._jacobian = jacobian

    def _evaluator(self):
        residual = chunk_residual(self._f, self._data.has_sigma)
        if not self._jacobian:
            return jit_program(residual)
        jacobian = forward_jacobian(residual)
        if self._loss is None:
            return jit_program(jacobian)
        loss, f_scale, eps = self._loss, self._f_scale, np.finfo(self._dtype).eps

        def scaled(p, chunk):
            f = residual(p, chunk)
            rho = evaluate_loss(loss, f, jnp.asarray(f_scale, f.dtype))
            return scale_for_robust_loss(jacobian(p, chunk), f, rho, eps)[0]

        return jit_program(scaled)

    def numpy(self) -> np.ndarray:
        """The rows, as a float64 NumPy array (computed on each call)."""
        has_sigma = self._data.has_sigma
        evaluate = self._evaluator()
        chunks = (
            self._data.make()
            if isinstance(self._data, IterableData)
            else self._data.chunks(MAX_CHUNK)
        )
        parts = []
        with jax.enable_x64(True):
            for index, item in enumerate(chunks):
                x, y, weights = item
                if isinstance(self._data, IterableData):
                    x, y, weights = IterableData.unpack(index, item)
                chunk = (x, y) + ((weights * np.ones_like(y),) if has_sigma else ())
                parts.append(np.asarray(evaluate(self._popt.astype(self._dtype), chunk), float))
        return gather_processes(np.concatenate(parts))


def gather_processes(rows: np.ndarray) -> np.ndarray:
    """Every process's ``rows`` (first axis), concatenated in process order."""
    if jax.process_count() == 1:
        return rows
    from jax.experimental import multihost_utils

    counts = np.asarray(multihost_utils.process_allgather(np.asarray(rows.shape[0], np.int64)))
    padded = np.zeros((int(counts.max()),) + rows.shape[1:], rows.dtype)
    padded[: rows.shape[0]] = rows
    gathered = np.asarray(multihost_utils.process_allgather(padded))
    return np.concatenate([part[:count] for part, count in zip(gathered, counts, strict=True)])
