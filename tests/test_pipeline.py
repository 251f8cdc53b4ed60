"""One path for every kind of fit: the behaviours that the three old paths did not share,
and the published nlsq's ``CurveFit().curve_fit(f, ...)``.

References are the single in-memory fit (same process, same path) or scipy. A chunked
fit solves the same problem from ``J^T J``: its values agree with the in-memory fit's
to ``cond(J)**2 * eps`` times a safety factor, which for the well-conditioned decay
here (cond(J) < 30) is far below the 1e-9 used.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as so

import nlsq
from nlsq import CurveFit, FitMemoryError
from nlsq.execute import chunked as chunked_module

CHUNKED_RTOL = 1e-9
P0 = [1.0, 1.0]


def decay(x, a, b):
    return a * jnp.exp(-b * x)


def np_decay(x, a, b):
    return a * np.exp(-b * x)


def _data(m: int = 3000, seed: int = 1):
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 4.0, m)
    return x, 2.0 * np.exp(-0.7 * x) + 0.01 * rng.standard_normal(m)


def _assert_close(actual, expected, rtol=CHUNKED_RTOL):
    actual, expected = np.asarray(actual), np.asarray(expected)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * np.abs(expected).max())


# --- chunk_size reaches CurveFit ------------------------------------------------------


@pytest.mark.parametrize("where", ["constructor", "fit"])
def test_curvefit_takes_chunk_size_like_curve_fit(where: str) -> None:
    x, y = _data()
    expected = nlsq.curve_fit(decay, x, y, p0=P0, chunk_size=1024)
    in_memory = nlsq.curve_fit(decay, x, y, p0=P0)
    if where == "constructor":
        result = CurveFit(decay, chunk_size=1024).fit(x, y, p0=P0)
    else:
        result = CurveFit(decay).fit(x, y, p0=P0, chunk_size=1024)
    # The same chunked program as curve_fit's: identical numbers.
    np.testing.assert_array_equal(result.popt, expected[0])
    np.testing.assert_array_equal(result.pcov, expected[1])
    _assert_close(result.popt, in_memory[0])


# --- curve_fit_large: reasons, messages, indexing -------------------------------------


def test_curve_fit_large_names_a_numpy_model_as_the_reason() -> None:
    x, y = _data(200)
    with pytest.raises(TypeError, match="jax.numpy"):
        nlsq.curve_fit_large(np_decay, x, y, p0=P0)


def test_curve_fit_large_refuses_a_non_pointwise_model_with_its_reason() -> None:
    x, y = _data(200)
    with pytest.raises(ValueError, match="point by point"):
        nlsq.curve_fit_large(lambda x, a, b: a * jnp.exp(-b * x) + jnp.mean(x), x, y, p0=P0)


def test_empty_ydata_gives_scipys_message_everywhere() -> None:
    with pytest.raises(ValueError) as scipy_error:
        so.curve_fit(np_decay, np.array([]), np.array([]), p0=P0)
    for fit in (nlsq.curve_fit, nlsq.curve_fit_large):
        with pytest.raises(ValueError) as ours:
            fit(decay, np.array([]), np.array([]), p0=P0)
        assert str(ours.value) == str(scipy_error.value)


def test_curve_fit_large_result_indexes_like_curve_fits_tuple() -> None:
    x, y = _data()
    result = nlsq.curve_fit_large(decay, x, y, p0=P0, chunk_size=1024)
    popt, pcov = nlsq.curve_fit(decay, x, y, p0=P0, chunk_size=1024)
    assert len(result) == 2
    np.testing.assert_array_equal(result[0], popt)
    np.testing.assert_array_equal(result[1], pcov)
    np.testing.assert_array_equal(result[-1], pcov)
    assert [a is b for a, b in zip(result[:], (result.popt, result.pcov), strict=True)] == [
        True
    ] * 2
    with pytest.raises(IndexError):
        result[2]


# --- a scalar ydata broadcast against the model (scipy's TestCurveFit.test_broadcast_y) --


@pytest.mark.parametrize("method", [None, "lm", "trf", "dogbox"])
def test_scalar_ydata_broadcasts_against_the_model(method: str | None) -> None:
    xdata = np.arange(10.0)
    target = 4.7 * xdata**2 + 3.5 * xdata + np.random.default_rng(0).random(10)

    def fit_func(x, a, b):
        return a * x**2 + b * x - target

    popt0, pcov0 = nlsq.curve_fit(fit_func, xdata, np.zeros_like(xdata), method=method)
    popt1, pcov1 = nlsq.curve_fit(fit_func, xdata, 0, method=method)
    ref_popt, ref_pcov = so.curve_fit(fit_func, xdata, 0, method=method or "trf")
    np.testing.assert_allclose(popt1, popt0, rtol=1e-12)
    np.testing.assert_allclose(pcov1, pcov0, rtol=1e-10)
    np.testing.assert_allclose(popt1, ref_popt, rtol=1e-8)
    np.testing.assert_allclose(pcov1, ref_pcov, rtol=1e-6)


def test_scalar_ydata_still_refuses_too_few_residuals_like_scipy() -> None:
    def one_value(x, a, b, c):
        return a + b + c + 0 * x

    with pytest.raises(TypeError) as scipy_error:
        so.curve_fit(one_value, 1.0, 0.0, p0=[1.0, 1.0, 1.0])
    with pytest.raises(TypeError) as ours:
        nlsq.curve_fit(one_value, 1.0, 0.0, p0=[1.0, 1.0, 1.0])
    assert str(ours.value) == str(scipy_error.value)


# --- batches: out of memory, the one memory budget -------------------------------------


def test_batch_out_of_memory_becomes_fit_memory_error(monkeypatch) -> None:
    runtime_error = jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating.")

    def exhausted(*args, **kwargs):
        def failing(*a, **k):
            raise runtime_error

        return failing

    monkeypatch.setattr("nlsq.api.pipeline.batch_program", exhausted)
    x = np.linspace(0, 4, 32)
    with pytest.raises(FitMemoryError, match="fits_per_chunk") as raised:
        nlsq.curve_fit_batch(decay, x, np.tile(2 * np.exp(-0.7 * x), (4, 1)), p0=P0)
    assert "NLSQ_MEMORY_BUDGET" in str(raised.value)
    assert raised.value.__cause__ is runtime_error


def test_memory_budget_setting_reaches_batches(monkeypatch) -> None:
    x = np.linspace(0, 4, 64)
    y = np.tile(2 * np.exp(-0.7 * x), (40, 1))
    assert nlsq.curve_fit_batch(decay, x, y, p0=P0).chunks == 1
    monkeypatch.setenv("NLSQ_MEMORY_BUDGET", "64KiB")
    limited = nlsq.curve_fit_batch(decay, x, y, p0=P0)
    assert limited.chunks > 1
    argument = nlsq.curve_fit_batch(decay, x, y, p0=P0, memory_budget="64KiB")
    assert argument.chunks == limited.chunks
    np.testing.assert_array_equal(limited.popt, argument.popt)


# --- FitResult.jac and residuals: the same in memory and chunked -------------------------


@pytest.mark.parametrize("loss", ["linear", "soft_l1", "cauchy"])
def test_chunked_jac_and_residuals_equal_the_in_memory_ones(loss: str) -> None:
    x, y = _data(2000)
    y[::50] += 0.5
    in_memory = CurveFit(decay, p0=P0, loss=loss, f_scale=0.1).fit(x, y)
    chunked = CurveFit(decay, p0=P0, loss=loss, f_scale=0.1, chunk_size=512).fit(x, y)
    _assert_close(chunked.popt, in_memory.popt)
    _assert_close(chunked.residuals, in_memory.residuals, rtol=1e-8)
    _assert_close(chunked.jac, in_memory.jac, rtol=1e-8)
    assert chunked.chisqr == pytest.approx(in_memory.chisqr, rel=1e-8)


def test_multi_process_rows_are_gathered_in_process_order(monkeypatch) -> None:
    """Each process holds its own points; residuals (and chisqr) cover all of them."""
    from jax.experimental import multihost_utils

    other = np.array([[7.0, 8.0], [9.0, 10.0], [11.0, 12.0]])

    def allgather(value):
        value = np.asarray(value)
        if value.ndim == 0:
            return np.array([value, other.shape[0]])
        padded = np.zeros_like(value)
        padded[: other.shape[0]] = other[: value.shape[0]]
        return np.stack([value, padded])

    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(multihost_utils, "process_allgather", allgather)
    local = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [0.5, 0.25]])
    gathered = chunked_module.gather_processes(local)
    np.testing.assert_array_equal(gathered, np.concatenate([local, other]))


# --- the published nlsq's CurveFit --------------------------------------------------------


def test_curvefit_without_a_model_fits_like_curve_fit() -> None:
    x, y = _data(300)
    cf = CurveFit()
    popt, pcov = cf.curve_fit(decay, x, y, p0=P0)
    expected = nlsq.curve_fit(decay, x, y, p0=P0)
    np.testing.assert_array_equal(popt, expected[0])
    np.testing.assert_array_equal(pcov, expected[1])
    ref_popt, ref_pcov = so.curve_fit(np_decay, x, y, p0=P0, method="trf")
    np.testing.assert_allclose(popt, ref_popt, rtol=1e-7)
    np.testing.assert_allclose(pcov, ref_pcov, rtol=1e-5)


def test_curvefit_curve_fit_has_curve_fits_signature_and_results() -> None:
    x, y = _data(300)
    sigma = np.full(x.size, 0.01)
    bounds = ([0.0, 0.0], [10.0, 10.0])
    cf = CurveFit()
    ours = cf.curve_fit(decay, x, y, P0, sigma, True, None, bounds, "trf", full_output=True)
    theirs = nlsq.curve_fit(decay, x, y, P0, sigma, True, None, bounds, "trf", full_output=True)
    for a, b in zip(ours[:2], theirs[:2], strict=True):
        np.testing.assert_array_equal(a, b)
    assert ours[3:] == theirs[3:]
    np.testing.assert_array_equal(ours[2]["fvec"], theirs[2]["fvec"])
    assert ours[2]["nfev"] == theirs[2]["nfev"]
    lm = cf.curve_fit(decay, x, y, p0=P0, method="lm", full_output=True)
    lm_ref = nlsq.curve_fit(decay, x, y, p0=P0, method="lm", full_output=True)
    np.testing.assert_array_equal(lm[0], lm_ref[0])
    assert lm[4] == lm_ref[4] and lm[3] == lm_ref[3]
    np.testing.assert_array_equal(lm[2]["ipvt"], lm_ref[2]["ipvt"])


def test_curvefit_curve_fit_raises_and_warns_like_curve_fit() -> None:
    x, y = _data(300)
    cf = CurveFit()
    with pytest.raises(RuntimeError, match="Optimal parameters not found"):
        cf.curve_fit(decay, x, y, p0=P0, max_nfev=1)
    with pytest.warns(so.OptimizeWarning, match="Covariance"):
        cf.curve_fit(decay, x[:2], y[:2], p0=P0, method="trf")
    with pytest.raises(ValueError, match="must not be empty"):
        cf.curve_fit(decay, [], [], p0=P0)


def test_reused_curvefit_compiles_once_per_bucket_for_new_data() -> None:
    def shifted(x, a, b):
        return a * jnp.exp(-b * x) + 0.125

    cf = CurveFit()
    results = [
        cf.curve_fit(shifted, *_data(m, seed=m), p0=P0, full_output=True) for m in (70, 90, 128)
    ]
    later = [info["cache_stats"] for _, _, info, _, _ in results[1:]]
    assert all(stats["hit"] and stats["compiles"] == 0 for stats in later)
    # fit() of a fitter bound to the same model runs the same program.
    again = CurveFit(shifted, p0=P0).fit(*_data(100, seed=5))
    assert again.cache_stats["hit"] and again.cache_stats["compiles"] == 0


def test_flength_pads_every_dataset_up_to_it_to_one_program() -> None:
    def offset(x, a, b):
        return a * jnp.exp(-b * x) - 0.25

    cf = CurveFit(flength=300)
    first = cf.curve_fit(offset, *_data(40), p0=P0, full_output=True)
    second = cf.curve_fit(offset, *_data(250), p0=P0, full_output=True)
    assert second[2]["cache_stats"]["hit"] and second[2]["cache_stats"]["compiles"] == 0
    # A bucket of its own (64 and 256) would have compiled a second program.
    assert first[2]["cache_stats"]["compiles"] + int(first[2]["cache_stats"]["disk_hit"]) >= 1
    for (popt, pcov, *_), m in ((first, 40), (second, 250)):
        reference = nlsq.curve_fit(offset, *_data(m), p0=P0)
        np.testing.assert_allclose(popt, reference[0], rtol=1e-10)
        np.testing.assert_allclose(pcov, reference[1], rtol=1e-8)
    # Longer data than flength use the size buckets; a positional flength is accepted.
    np.testing.assert_allclose(
        CurveFit(300).curve_fit(offset, *_data(500), p0=P0)[0],
        nlsq.curve_fit(offset, *_data(500), p0=P0)[0],
        rtol=1e-12,
    )


def test_published_constructor_arguments() -> None:
    assert CurveFit(flength=64, use_dynamic_sizing=True).flength == 64
    CurveFit(enable_stability=False, enable_recovery=False, enable_overflow_check=False)
    with pytest.raises(ValueError, match="enable_stability"):
        CurveFit(enable_stability=True)
    for bad in (0, 2.5, -3):
        with pytest.raises(ValueError, match="flength"):
            CurveFit(flength=bad)
    with pytest.raises(TypeError, match="no model"):
        CurveFit().fit(*_data(50))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        CurveFit(flength=64.0)


# --- found by the golden recording ----------------------------------------------------------


def test_a_numpy_model_fits_data_of_another_length_after_the_first() -> None:
    def np_line_decay(x, a, b):
        return a * np.exp(-b * x) + 0.0625

    x, y = _data(60)
    for m in (60, 57, 3):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", nlsq.host.NumPyModelWarning)
            popt, _ = nlsq.curve_fit(np_line_decay, x[:m], y[:m], p0=P0)
        expected, _ = so.curve_fit(np_line_decay, x[:m], y[:m], p0=P0, method="trf")
        np.testing.assert_allclose(popt, expected, rtol=1e-6)


def test_least_squares_lm_in_single_precision_reports_tolerances_below_its_epsilon() -> None:
    x = np.linspace(0, 4, 60)
    y = 2 * np.exp(-0.7 * x)
    result = nlsq.least_squares(
        lambda p: p[0] * jnp.exp(-p[1] * x) - y, [1.0, 1.0], method="lm", dtype="float32"
    )
    if result.status in (6, 7, 8):
        assert not result.success and "too small for the working precision" in result.message
    else:
        assert result.success
    np.testing.assert_allclose(result.x, [2.0, 0.7], rtol=1e-4)


@pytest.mark.parametrize("chunk_size", [0, -5, 2.5, True])
def test_chunk_size_must_be_a_positive_integer_everywhere(chunk_size) -> None:
    x, y = _data(100)
    for fit in (nlsq.curve_fit, nlsq.curve_fit_large):
        with pytest.raises(ValueError, match="`chunk_size` must be a positive integer"):
            fit(decay, x, y, p0=P0, chunk_size=chunk_size)


def test_chunk_size_with_a_numpy_model_names_the_reason() -> None:
    x, y = _data(100)
    with pytest.raises(ValueError, match="jax.numpy"):
        nlsq.curve_fit(np_decay, x, y, p0=P0, chunk_size=32)
