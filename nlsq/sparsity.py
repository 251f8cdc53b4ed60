"""Sparsity patterns of Jacobians: validation and column grouping (on the host).

A Jacobian whose columns fall into groups with no two columns of a group sharing a
nonzero row is recovered from one directional derivative per group: the derivative
along the sum of a group's unit vectors holds each of its columns in that column's
rows (Curtis, Powell and Reid, 1974). The grouping here is the greedy sequential one
of scipy's ``group_columns`` over the same column order (a permutation drawn with
seed 0), so that nlsq evaluates the same groups as scipy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import xxhash
from scipy.sparse import coo_matrix, csc_matrix, issparse


@dataclass(frozen=True, eq=False)
class SparsityPattern:
    """A Jacobian's nonzero positions and its column groups.

    ``rows`` and ``cols`` list the structural nonzeros in row-major order; ``groups``
    gives each column's group (``0 .. n_groups - 1``). Patterns compare and hash by
    content, so that a program built for one is reused for an equal one.
    """

    shape: tuple[int, int]
    rows: np.ndarray
    cols: np.ndarray
    groups: np.ndarray
    n_groups: int
    digest: str

    def __hash__(self) -> int:
        return hash(self.digest)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SparsityPattern) and self.digest == other.digest

    @property
    def nnz(self) -> int:
        return int(self.rows.size)


def check_jac_sparsity(jac_sparsity: Any, m: int, n: int) -> Any:
    """scipy's checks of ``jac_sparsity``: a 2-D array or sparse matrix of shape (m, n).

    Raises
    ------
    ValueError
        With scipy's message for a wrong shape.
    """
    if issparse(jac_sparsity):
        structure = csc_matrix(jac_sparsity)
    else:
        structure = np.atleast_2d(np.asarray(jac_sparsity))
    if structure.shape != (m, n):
        raise ValueError("`jac_sparsity` has wrong shape.")
    return structure


def group_columns(structure: Any, order: int | np.ndarray = 0) -> np.ndarray:
    """Group the columns of ``structure`` so that no two in a group share a row.

    Columns are visited in the order of ``order`` (an int seeds a random permutation,
    as scipy's ``group_columns`` does); each joins the first group it does not
    conflict with, or opens a new one.

    Returns
    -------
    groups : ndarray of int, shape (n,)
    """
    csc = csc_matrix(structure)
    csc.eliminate_zeros()
    m, n = csc.shape
    if np.isscalar(order):
        order = np.random.RandomState(order).permutation(n)
    order = np.asarray(order)
    indptr, indices = csc.indptr, csc.indices
    # owner[r]: the groups already holding row r, as bits of a growing integer per
    # row would be slow in Python; instead each group keeps the last column that
    # claimed each row, and "group g has row r" is `claimed[g, r]`.
    claimed = np.zeros((0, m), dtype=bool)
    groups = np.empty(n, dtype=np.int64)
    for column in order:
        rows = indices[indptr[column] : indptr[column + 1]]
        conflicts = claimed[:, rows].any(axis=1) if rows.size else np.zeros(len(claimed), bool)
        free = np.flatnonzero(~conflicts)
        if free.size:
            group = int(free[0])
        else:
            group = len(claimed)
            claimed = np.concatenate([claimed, np.zeros((max(1, len(claimed)), m), bool)])
            # Grown by doubling; rows past the groups in use stay unclaimed.
        claimed[group, rows] = True
        groups[column] = group
    return groups


def sparsity_pattern(jac_sparsity: Any, shape: tuple[int, int] | None = None) -> SparsityPattern:
    """The pattern of ``jac_sparsity`` with scipy's column groups.

    ``shape``, when given, is checked (scipy's error); otherwise the program checks
    it against the residuals.
    """
    if shape is None:
        shape = np.atleast_2d(jac_sparsity).shape if not issparse(jac_sparsity) else None
        shape = jac_sparsity.shape if shape is None else shape
    m, n = shape
    structure = check_jac_sparsity(jac_sparsity, m, n)
    coo = coo_matrix(structure)
    coo.sum_duplicates()
    coo.eliminate_zeros()
    # Row-major order: products J v then reduce over contiguous runs of rows.
    order = np.lexsort((coo.col, coo.row))
    rows = coo.row[order].astype(np.int64)
    cols = coo.col[order].astype(np.int64)
    digest = xxhash.xxh3_128_hexdigest(
        np.asarray([m, n], np.int64).tobytes() + rows.tobytes() + cols.tobytes()
    )
    groups = _cached_groups(digest, structure)
    return SparsityPattern(
        shape=(m, n),
        rows=rows,
        cols=cols,
        groups=groups,
        n_groups=int(groups.max()) + 1 if n else 0,
        digest=digest,
    )


_GROUPS: dict[str, np.ndarray] = {}


def _cached_groups(digest: str, structure: Any) -> np.ndarray:
    """Column groups of a pattern, computed once per process (the greedy pass is the
    slow part of preparing a large sparse problem)."""
    groups = _GROUPS.get(digest)
    if groups is None:
        groups = group_columns(structure)
        _GROUPS[digest] = groups
    return groups


def fixed_pattern(J0: Any) -> SparsityPattern:
    """The stored entries of a sparse Jacobian ``J0`` as a pattern (its explicit
    zeros included: they may be nonzero elsewhere); no column groups."""
    coo = coo_matrix(J0)
    coo.sum_duplicates()
    order = np.lexsort((coo.col, coo.row))
    rows = coo.row[order].astype(np.int64)
    cols = coo.col[order].astype(np.int64)
    m, n = coo.shape
    digest = xxhash.xxh3_128_hexdigest(
        np.asarray([m, n], np.int64).tobytes() + rows.tobytes() + cols.tobytes()
    )
    groups = np.zeros(n, np.int64)
    return SparsityPattern((m, n), rows, cols, groups, 1, digest)
