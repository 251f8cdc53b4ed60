"""The small-matrix QR and SVD of :mod:`nlsq.small_linalg` against NumPy's LAPACK."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nlsq.small_linalg import householder_r, jacobi_svd


def _r_factor(A: np.ndarray, dtype=np.float64) -> np.ndarray:
    with jax.enable_x64(dtype == np.float64):
        return np.asarray(householder_r(jnp.asarray(A, dtype)))


def _svd(R: np.ndarray, dtype=np.float64) -> tuple[np.ndarray, ...]:
    with jax.enable_x64(dtype == np.float64):
        return tuple(np.asarray(a) for a in jacobi_svd(jnp.asarray(R, dtype)))


@pytest.mark.parametrize("shape", [(64, 4), (10, 10), (5, 2), (3, 1), (40, 9)])
def test_householder_r_is_lapacks_up_to_row_signs(shape) -> None:
    rng = np.random.default_rng(sum(shape))
    A = rng.standard_normal(shape) * np.logspace(0, 6, shape[1])
    R = _r_factor(A)
    reference = np.linalg.qr(A, mode="r")
    assert np.all(np.tril(R, -1) == 0)
    signs = np.sign(np.diag(R)) * np.sign(np.diag(reference))
    np.testing.assert_allclose(signs[:, None] * R, reference, rtol=0, atol=1e-14 * np.abs(A).max())
    # R^T R = A^T A whatever the signs.
    np.testing.assert_allclose(R.T @ R, A.T @ A, rtol=1e-12, atol=1e-14 * np.abs(A.T @ A).max())


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_jacobi_svd_matches_lapack(n: int) -> None:
    rng = np.random.default_rng(n)
    # Singular values over eight decades.
    Q1, _ = np.linalg.qr(rng.standard_normal((n, n)))
    Q2, _ = np.linalg.qr(rng.standard_normal((n, n)))
    expected = np.logspace(4, -4, n)
    R = (Q1 * expected) @ Q2.T
    U, s, V = _svd(R)
    assert np.all(np.diff(s) <= 0)
    # Both are accurate to a few ulps of the largest singular value.
    reference = np.linalg.svd(R, compute_uv=False)
    np.testing.assert_allclose(s, reference, rtol=1e-12, atol=1e-14 * expected[0])
    np.testing.assert_allclose(V.T @ V, np.eye(n), atol=1e-13)
    np.testing.assert_allclose(U.T @ U, np.eye(n), atol=1e-9)
    np.testing.assert_allclose((U * s) @ V.T, R, atol=1e-12 * expected[0])


def test_rank_deficient_and_zero_matrices() -> None:
    rng = np.random.default_rng(3)
    A = rng.standard_normal((20, 3))
    A[:, 2] = A[:, 0] - 2 * A[:, 1]
    U, s, V = _svd(_r_factor(A))
    reference = np.linalg.svd(A, compute_uv=False)
    np.testing.assert_allclose(s[:2], reference[:2], rtol=1e-12)
    assert s[2] < 1e-14 * s[0]
    U, s, V = _svd(np.zeros((3, 3)))
    assert np.all(s == 0) and np.all(U == 0)
    np.testing.assert_allclose(V.T @ V, np.eye(3))
    assert np.all(_r_factor(np.zeros((6, 2))) == 0)


def test_vmapped_and_float32() -> None:
    rng = np.random.default_rng(4)
    A = rng.standard_normal((7, 30, 4))
    with jax.enable_x64(True):
        s = np.asarray(jax.vmap(lambda a: jacobi_svd(householder_r(a))[1])(jnp.asarray(A)))
    np.testing.assert_allclose(s, np.linalg.svd(A, compute_uv=False), rtol=1e-12)
    U, s32, V = _svd(_r_factor(A[0], np.float32), np.float32)
    assert s32.dtype == np.float32
    np.testing.assert_allclose(s32, np.linalg.svd(A[0], compute_uv=False), rtol=1e-5)
