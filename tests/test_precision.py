"""Working precision: float64 by default, float32 on request, global config untouched."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import nlsq
from nlsq.precision import resolve_dtype


def _model(x, a, b):
    return a * jnp.exp(-b * x)


def _data() -> tuple[np.ndarray, np.ndarray]:
    x = np.linspace(0, 3, 200)
    rng = np.random.default_rng(1)
    return x, 3.0 * np.exp(-1.1 * x) + 0.01 * rng.standard_normal(x.size)


def test_default_is_float64_without_enabling_x64_globally() -> None:
    x, y = _data()
    before = jax.config.jax_enable_x64
    popt, pcov = nlsq.curve_fit(_model, x, y, p0=[1, 1])
    assert jax.config.jax_enable_x64 == before
    assert popt.dtype == np.float64 and pcov.dtype == np.float64
    expected, _ = scipy.optimize.curve_fit(
        lambda x, a, b: a * np.exp(-b * x), x, y, p0=[1, 1], method="trf"
    )
    np.testing.assert_allclose(popt, expected, rtol=1e-6)


def test_float32_fit_agrees_with_float64_to_single_precision() -> None:
    x, y = _data()
    popt64, _ = nlsq.curve_fit(_model, x, y, p0=[1, 1])
    popt32, pcov32 = nlsq.curve_fit(_model, x, y, p0=[1, 1], dtype="float32", ftol=1e-6)
    # Results are returned as float64 NumPy arrays whatever the working precision.
    assert popt32.dtype == np.float64
    np.testing.assert_allclose(popt32, popt64, rtol=1e-4)
    assert np.all(np.isfinite(pcov32))


@pytest.mark.parametrize("dtype", [None, "float64", np.float64, jnp.float64])
def test_resolve_dtype_float64(dtype) -> None:
    assert resolve_dtype(dtype) is np.float64


@pytest.mark.parametrize("dtype", ["float32", np.float32, jnp.float32])
def test_resolve_dtype_float32(dtype) -> None:
    assert resolve_dtype(dtype) is np.float32


@pytest.mark.parametrize("dtype", ["float16", "int32", "complex128", "banana"])
def test_resolve_dtype_rejects_others(dtype) -> None:
    with pytest.raises(ValueError, match="`dtype` must be 'float64' or 'float32'"):
        resolve_dtype(dtype)
