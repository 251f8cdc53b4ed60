"""Jacobian-based variable scaling (``x_scale='jac'``) against hand values and scipy."""

from __future__ import annotations

import jax
import numpy as np
import pytest
import scipy.optimize._lsq.common as scipy_common

from nlsq.solvers import scaling

compute_jac_scale = jax.jit(scaling.compute_jac_scale)


pytestmark = pytest.mark.usefixtures("x64")


def test_first_call_uses_column_norms_and_replaces_zeros_by_one():
    J = np.array([[3.0, 0.0, 1.0], [4.0, 0.0, 0.0]])
    scale, scale_inv = compute_jac_scale(J)
    np.testing.assert_array_equal(scale_inv, [5.0, 1.0, 1.0])
    np.testing.assert_array_equal(scale, [0.2, 1.0, 1.0])


def test_update_never_decreases_the_norms():
    old = np.array([5.0, 1.0, 1.0])
    J = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 3.0]])
    scale, scale_inv = compute_jac_scale(J, old)
    np.testing.assert_array_equal(scale_inv, [5.0, 2.0, 3.0])
    np.testing.assert_allclose(scale, [0.2, 0.5, 1 / 3], rtol=1e-15)


def test_update_keeps_old_norm_for_a_zero_column():
    # The zero-to-one rule applies only on the first call; later the old norm is kept.
    scale, scale_inv = compute_jac_scale(np.zeros((2, 2)), np.array([0.5, 4.0]))
    np.testing.assert_array_equal(scale_inv, [0.5, 4.0])
    np.testing.assert_array_equal(scale, [2.0, 0.25])


def test_eager_call_matches():
    J = np.array([[0.0, 6.0], [0.0, 8.0]])
    scale, scale_inv = scaling.compute_jac_scale(J)
    np.testing.assert_array_equal(scale_inv, [1.0, 10.0])
    np.testing.assert_array_equal(scale, [1.0, 0.1])
    _, scale_inv = scaling.compute_jac_scale(J, np.array([2.0, 3.0]))
    np.testing.assert_array_equal(scale_inv, [2.0, 10.0])


def test_matches_scipy():
    rng = np.random.default_rng(0)
    scale_inv_old = None
    for k in range(30):
        J = rng.standard_normal((6, 4)) * 10.0 ** rng.integers(-3, 4, 4)
        J[:, rng.random(4) < 0.2] = 0.0
        old = None if k % 2 == 0 else scale_inv_old
        expected = scipy_common.compute_jac_scale(J, old)
        result = compute_jac_scale(J) if old is None else compute_jac_scale(J, old)
        for ours, theirs in zip(result, expected, strict=True):
            np.testing.assert_allclose(ours, theirs, rtol=1e-14)
        scale_inv_old = np.asarray(result[1]) * rng.uniform(0.5, 1.5, 4)
