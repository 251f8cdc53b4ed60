"""Which models may be padded to a size bucket (nlsq/pointwise.py)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import curve_fit as scipy_curve_fit

import nlsq
from nlsq.pointwise import _statically_pointwise, acts_pointwise

X = np.linspace(0.1, 1.0, 100)
P = np.array([1.5, 2.0])

POINTWISE = {
    "exponential": lambda x, a, b: a * jnp.exp(-b * x),
    "gaussian": lambda x, a, b: a * jnp.exp(-(((x - b) / 0.3) ** 2) / 2),
    "piecewise": lambda x, a, b: jnp.where(x > 0.5, a * x, b),
    "powers": lambda x, a, b: a * x**2 + b * jnp.abs(x) ** 1.5,
    "cumsum": lambda x, a, b: a * jnp.cumsum(x) + b,  # prefix values do not change
}
NOT_POINTWISE = {
    "centred": lambda x, a, b: a * (x - x.mean()) + b,
    "divided by size": lambda x, a, b: a * x / x.size + b,
    "divided by len": lambda x, a, b: a * x / len(x) + b,
    "reversed": lambda x, a, b: a * x[::-1] + b,
    "sum": lambda x, a, b: a * jnp.sum(x) + b * x,
    "scalar": lambda x, a, b: a + b,
    # The length sits in one branch of a conditional on the parameters alone.
    "size in a branch": lambda x, a, b: a * x + jax.lax.cond(b > 0, lambda: b / x.size, lambda: b),
}


@pytest.mark.parametrize("name", POINTWISE)
def test_pointwise_models_may_be_padded(name: str) -> None:
    assert acts_pointwise(POINTWISE[name], X, P)


@pytest.mark.parametrize("name", NOT_POINTWISE)
def test_models_that_read_other_points_are_not_padded(name: str) -> None:
    assert not acts_pointwise(NOT_POINTWISE[name], X, P)


@pytest.mark.parametrize("name", ["exponential", "gaussian", "piecewise", "powers"])
def test_elementwise_models_are_proved_without_evaluation(name: str) -> None:
    with jax.enable_x64(True):
        assert _statically_pointwise(POINTWISE[name], X[:32], P)


def test_static_check_leaves_cumsum_to_the_numeric_probe() -> None:
    with jax.enable_x64(True):
        assert not _statically_pointwise(POINTWISE["cumsum"], X[:32], P)


def test_two_predictors_use_the_numeric_probe() -> None:
    xdata = np.stack([X, X**2])
    assert acts_pointwise(lambda x, a, b: a * x[0] + b * x[1], xdata, P)
    assert not acts_pointwise(lambda x, a, b: a * x[0] + b * x[1].mean(), xdata, P)


def test_a_model_that_fails_on_a_slice_is_not_padded() -> None:
    weights = np.ones(X.size)  # has the data's full length: breaks on any slice
    assert not acts_pointwise(lambda x, a, b: a * weights * x + b, X, P)


def test_a_model_reading_the_length_in_a_branch_fits_as_scipy() -> None:
    """Padded to its size bucket, the model would divide by the bucket's length."""

    def model(x, a, b):
        return a * x + jax.lax.cond(b > 0, lambda: b / x.size, lambda: b)

    def numpy_model(x, a, b):
        return a * x + (b / x.size if b > 0 else b)

    y = numpy_model(X, 1.5, 2.0) + 0.01 * np.sin(13 * X)
    popt, _ = nlsq.curve_fit(model, X, y, p0=[1.0, 1.0])
    expected, _ = scipy_curve_fit(numpy_model, X, y, p0=[1.0, 1.0])
    np.testing.assert_allclose(popt, expected, rtol=1e-6)
