"""A sparse Jacobian in the compiled program, and how it is formed.

:class:`SparseJacobian` stores the structural nonzeros as ``(values, rows, cols)``
(coordinate form, rows ascending) and supports what the trust-region iteration with
``tr_solver='lsmr'`` asks of a Jacobian: products ``J v`` and ``J^T u`` (segment sums
over the nonzeros), scaling of rows and columns, column norms. The dense ``m x n``
matrix is never formed.

The Jacobian itself comes from one directional derivative per column group (see
:mod:`nlsq.sparsity`): a forward-mode ``jvp`` along the group's seed vector, or a
finite difference along it, gives every column of the group in its own rows.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import Array
from jax.tree_util import register_pytree_node_class


@register_pytree_node_class
class SparseJacobian:
    """An ``m x n`` matrix by its nonzeros ``values[k]`` at ``(rows[k], cols[k])``."""

    def __init__(self, values: Array, rows: Array, cols: Array, shape: tuple[int, int]) -> None:
        self.values = values
        self.rows = rows
        self.cols = cols
        self.shape = shape

    def tree_flatten(self) -> tuple[tuple[Array, Array, Array], tuple[int, int]]:
        return (self.values, self.rows, self.cols), self.shape

    @classmethod
    def tree_unflatten(cls, shape: tuple[int, int], children: tuple) -> SparseJacobian:
        return cls(*children, shape)

    @property
    def dtype(self) -> jnp.dtype:
        return self.values.dtype

    def __matmul__(self, v: Array) -> Array:
        """``J v`` for a vector ``v`` of shape (n,)."""
        return jax.ops.segment_sum(
            self.values * v[self.cols],
            self.rows,
            num_segments=self.shape[0],
            indices_are_sorted=True,
        )

    @property
    def T(self) -> _Transposed:  # noqa: N802 - numpy's name for the transpose
        return _Transposed(self)

    def __mul__(self, other: Array) -> SparseJacobian:
        """Broadcasting product as for a dense matrix: ``J * d`` with ``d`` of shape
        (n,) scales columns, ``J * w[:, None]`` scales rows."""
        other = jnp.asarray(other)
        if other.ndim == 2 and other.shape[1] == 1:
            factor = other[:, 0][self.rows]
        else:
            factor = other[self.cols]
        return SparseJacobian(self.values * factor, self.rows, self.cols, self.shape)

    def scaled(self, d: Array) -> SparseJacobian:
        """``J * d``: columns scaled by ``d``."""
        return self * d

    def column_norms(self) -> Array:
        """Euclidean norm of each column."""
        squares = jax.ops.segment_sum(self.values**2, self.cols, num_segments=self.shape[1])
        return jnp.sqrt(squares)

    def where_rows(self, keep: Array) -> SparseJacobian:
        """Rows outside ``keep`` set to zero."""
        return SparseJacobian(
            jnp.where(keep[self.rows], self.values, 0.0), self.rows, self.cols, self.shape
        )


class _Transposed:
    """``J^T`` of a :class:`SparseJacobian`, for products only."""

    def __init__(self, J: SparseJacobian) -> None:
        self.J = J

    def __matmul__(self, u: Array) -> Array:
        J = self.J
        return jax.ops.segment_sum(J.values * u[J.rows], J.cols, num_segments=J.shape[1])


class Coloring:
    """A sparsity pattern as the program sees it: traced index arrays and the static
    number of column groups."""

    def __init__(self, rows: Array, cols: Array, groups: Array, n_groups: int, m: int) -> None:
        self.rows = rows
        self.cols = cols
        self.groups = groups
        self.n_groups = n_groups
        self.m = m

    def seeds(self, dtype: jnp.dtype) -> Array:
        """The ``(n_groups, n)`` seed vectors: the sum of each group's unit vectors."""
        return (self.groups[None, :] == jnp.arange(self.n_groups)[:, None]).astype(dtype)

    def gather(self, compressed: Array) -> SparseJacobian:
        """The Jacobian's nonzeros from the ``(n_groups, m)`` group derivatives."""
        values = compressed[self.groups[self.cols], self.rows]
        n = self.groups.shape[0]
        return SparseJacobian(values, self.rows, self.cols, (self.m, n))


def colored_jvp_jacobian(
    fun: Callable[[Array], Array], coloring: Coloring
) -> Callable[[Array], SparseJacobian]:
    """``x -> J(x)`` from one forward-mode derivative per column group (exact)."""

    def jac(x: Array) -> SparseJacobian:
        seeds = coloring.seeds(x.dtype)
        linearized = jax.linearize(fun, x)[1]
        return coloring.gather(jax.vmap(linearized)(seeds))

    return jac


def colored_difference_jacobian(
    fun: Callable[[Array], Array],
    coloring: Coloring,
    steps: Callable[[Array, Array], Array],
    scheme: str,
) -> Callable[[Array, Array], SparseJacobian]:
    """``(x, f0) -> J(x)`` by finite differences along each group's seed vector.

    ``steps(x, f0)`` returns the signed absolute step of each variable (for
    '3-point', a pair: the steps and the mask of one-sided ones), as for the dense
    differences. The groups are evaluated one after the other (``lax.map``), so
    memory holds one residual vector per group at most.
    """

    def jac(x: Array, f0: Array) -> SparseJacobian:
        seeds = coloring.seeds(x.dtype)
        if scheme == "3-point":
            h, one_sided = steps(x, f0)

            def difference(seed: Array) -> Array:
                central = seed * ~one_sided
                forward = seed * one_sided
                x1 = x - h * central + h * forward
                x2 = x + h * central + 2 * h * forward
                f1, f2 = fun(x1), fun(x2)
                return (f1, f2)

            f1, f2 = jax.lax.map(difference, seeds)
            one_sided_col = one_sided[coloring.cols]
            g = coloring.groups[coloring.cols]
            a, b = f1[g, coloring.rows], f2[g, coloring.rows]
            f0r = f0[coloring.rows]
            dx_central = (x + h - (x - h))[coloring.cols]
            dx_forward = (x + 2 * h - x)[coloring.cols]
            central_values = (b - a) / dx_central
            forward_values = (-3.0 * f0r + 4 * a - b) / dx_forward
            values = jnp.where(one_sided_col, forward_values, central_values)
        elif scheme == "cs":
            h = steps(x, f0)
            imag = jax.lax.map(lambda seed: fun(x + h * seed * 1j).imag, seeds)
            values = imag[coloring.groups[coloring.cols], coloring.rows] / h[coloring.cols]
        else:
            h = steps(x, f0)
            shifted = jax.lax.map(lambda seed: fun(x + h * seed), seeds)
            dx = ((x + h) - x)[coloring.cols]
            df = shifted[coloring.groups[coloring.cols], coloring.rows] - f0[coloring.rows]
            values = df / dx
        n = x.shape[0]
        return SparseJacobian(values, coloring.rows, coloring.cols, (coloring.m, n))

    return jac


def gram_matrix(J: SparseJacobian, batch_size: int = 64) -> Array:
    """``J^T J`` (dense, ``n x n``), column by column: never more than ``batch_size``
    columns of ``J`` (length ``m``) at a time."""
    n = J.shape[1]
    eye = jnp.eye(n, dtype=J.dtype)
    return jax.lax.map(lambda e: J.T @ (J @ e), eye, batch_size=batch_size)
