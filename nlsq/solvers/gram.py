"""TRF on ``J^T J`` accumulated chunk by chunk: the exact solver for large data.

The Jacobian of ``m`` residuals is never formed. Each evaluation runs a
:func:`jax.lax.scan` over fixed-size chunks of the data; a chunk's residuals and its
``(chunk_size, n)`` Jacobian live only inside one scan step, where they are reduced
to the cost, ``J^T J`` and ``J^T f``. The trust-region iteration itself is
:func:`nlsq.solvers.trf.trf_loop`, the same code as the in-memory solver, working on
a :class:`~nlsq.solvers.trust_region.Gram` instead of the dense Jacobian.

Data come in ``B`` blocks of ``C`` chunks of ``S`` points. Blocks are independent
(``vmap``) and summed at the end: with the block axis sharded over a device mesh,
each device reduces its own blocks and XLA all-reduces the ``n x n`` sums. A chunk
may also be loaded from the host at each scan step (see :class:`ChunkSource`), for
data that do not fit in device memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import Array, lax

from nlsq.jacobian import forward_jacobian
from nlsq.loss import LossFunction, evaluate_loss, loss_cost, scale_for_robust_loss
from nlsq.solvers.progress import TracedCallback
from nlsq.solvers.trf import Linearization, TRFResult, Trial, trf_loop
from nlsq.solvers.trust_region import Gram

#: ``residual(p, chunk) -> f`` of shape ``(S,)`` for one chunk (a pytree of arrays).
ChunkResidual = Callable[[Array, Any], Array]


class ChunkSource(NamedTuple):
    """Where the chunks come from, inside compiled code.

    Attributes
    ----------
    blocks : pytree or None
        Device-resident data: every leaf has leading axes ``(B, C)``, then the
        chunk's own shape. None when chunks are loaded.
    counts : Array
        Real points of each block, shape ``(B,)``; a block's points come first, the
        rest of its last chunks is padding.
    load : callable or None
        ``load(c) -> chunk`` for a traced chunk index (a host callback), used when
        ``blocks`` is None; then ``B = 1``.
    n_chunks : int
        ``C``, chunks per block (static).
    chunk_size : int
        ``S``, points per chunk (static).
    """

    blocks: Any
    counts: Array
    load: Callable[[Array], Any] | None
    n_chunks: int
    chunk_size: int


def _zeros_like_output(function: Callable, *args: Any) -> Any:
    shapes = jax.eval_shape(function, *args)
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def _reduce_chunks(source: ChunkSource, stats: Callable[[Any, Array], Any]) -> Any:
    """Sum ``stats(chunk, valid)`` over every chunk; ``valid`` masks the padding."""
    C, S = source.n_chunks, source.chunk_size

    def add(total: Any, chunk: Any, c: Array, count: Array) -> Any:
        values = stats(chunk, c * S + jnp.arange(S) < count)
        return jax.tree.map(jnp.add, total, values)

    if source.blocks is None:
        count = source.counts[0]
        first = _zeros_like_output(source.load, jnp.asarray(0))

        def load_step(total: Any, c: Array) -> tuple[Any, None]:
            return add(total, source.load(c), c, count), None

        total, _ = lax.scan(
            load_step, _zeros_like_output(stats, first, jnp.ones(S, bool)), jnp.arange(C)
        )
        return total

    def block_sum(block: Any, count: Array) -> Any:
        def step(total: Any, item: tuple) -> tuple[Any, None]:
            chunk, c = item
            return add(total, chunk, c, count), None

        chunk0 = jax.tree.map(lambda leaf: leaf[0], block)
        init = _zeros_like_output(stats, chunk0, jnp.ones(S, bool))
        total, _ = lax.scan(step, init, (block, jnp.arange(C)))
        return total

    per_block = jax.vmap(block_sum)(source.blocks, source.counts)
    # With the block axis sharded, this sum is the cross-device all-reduce.
    return jax.tree.map(lambda a: jnp.sum(a, axis=0), per_block)


class _Sums(NamedTuple):
    cost: Array
    JTJ: Array
    JTf: Array
    not_finite: Array


def trf_chunked(
    residual: ChunkResidual,
    source: ChunkSource,
    x0: Array,
    lb: Array,
    ub: Array,
    ftol: Array,
    xtol: Array,
    gtol: Array,
    max_nfev: Array,
    x_scale: Array,
    f_scale: Array,
    *,
    bounded: bool,
    loss: LossFunction | None,
    jac_scale: bool,
    callback: TracedCallback | None = None,
) -> TRFResult:
    """TRF from chunked sums: :func:`nlsq.solvers.trf.trf` without the ``m x n`` Jacobian.

    Parameters
    ----------
    residual : callable
        ``residual(p, chunk) -> f`` for one chunk (weighted residuals).
    source : ChunkSource
        The data, as chunks.
    x0, lb, ub, ftol, xtol, gtol, max_nfev, x_scale, f_scale, bounded, loss,
    jac_scale, callback
        As for :func:`nlsq.solvers.trf.trf`.

    Returns
    -------
    TRFResult
        ``jac`` is ``J^T J`` (loss-scaled) at the solution; ``fun`` is empty.
    """
    dtype = x0.dtype
    eps = jnp.finfo(dtype).eps
    nothing = jnp.zeros(0, dtype)

    def chunk_residual(p: Array, chunk: Any, valid: Array) -> Array:
        f = jnp.asarray(residual(p, chunk)).astype(dtype)
        return jnp.where(valid, f, 0.0)

    def not_finite(f: Array) -> Array:
        return jnp.sum(~jnp.isfinite(f))

    def linearize(x: Array, _f_true: Array | None) -> Linearization:
        def stats(chunk: Any, valid: Array) -> _Sums:
            f = chunk_residual(x, chunk, valid)
            # Forward mode: n tangents of a (chunk_size,) output.
            J = forward_jacobian(chunk_residual)(x, chunk, valid)
            if loss is None:
                cost = 0.5 * jnp.dot(f, f)
                J_s, f_s = J, f
            else:
                rho = evaluate_loss(loss, f, f_scale)
                J_s, f_s = scale_for_robust_loss(J, f, rho, eps)
                cost = 0.5 * jnp.sum(jnp.where(valid, rho[0], 0.0))
            return _Sums(cost, J_s.T @ J_s, J_s.T @ f_s, not_finite(f))

        sums = _reduce_chunks(source, stats)
        return Linearization(
            nothing, sums.cost, Gram(sums.JTJ), nothing, sums.JTf, sums.not_finite == 0
        )

    def evaluate(x: Array) -> Trial:
        def stats(chunk: Any, valid: Array) -> tuple[Array, Array]:
            f = chunk_residual(x, chunk, valid)
            if loss is None:
                cost = 0.5 * jnp.dot(f, f)
            else:
                cost = loss_cost(loss, f, f_scale, valid)
            return cost, not_finite(f)

        cost, bad = _reduce_chunks(source, stats)
        return Trial(nothing, cost, bad == 0)

    return trf_loop(
        linearize,
        evaluate,
        x0,
        jnp.sum(source.counts),
        lb,
        ub,
        ftol,
        xtol,
        gtol,
        max_nfev,
        x_scale,
        bounded=bounded,
        jac_scale=jac_scale,
        callback=callback,
    )


def covariance_from_gram(JTJ: Array, n_residuals: Array | int) -> Array:
    """Moore-Penrose inverse of ``J^T J`` with scipy's rank rule, from ``J^T J`` alone.

    The eigenvalues of ``J^T J`` are the squared singular values ``s**2`` of ``J``;
    as in :func:`nlsq.covariance.unscaled_covariance`, ``s <= eps * max(m, n) *
    s_max`` are dropped. Eigenvalues below ``10 n eps`` times the largest are
    rounding noise of the eigendecomposition and are dropped too.
    """
    n = JTJ.shape[0]
    eps = jnp.finfo(JTJ.dtype).eps
    w, V = jnp.linalg.eigh(JTJ)
    w, V = w[::-1], V[:, ::-1]
    s = jnp.sqrt(jnp.maximum(w, 0.0))
    kept = (s > eps * jnp.maximum(n_residuals, n) * s[0]) & (w > 10 * n * eps * w[0])
    weights = jnp.where(kept, 1 / jnp.where(kept, w, 1.0), 0.0)
    return (V * weights) @ V.T
