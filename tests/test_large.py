"""The chunked large-data fit against the in-memory fit (and scipy).

Tolerance rule: the chunked fit runs the same TRF iteration on ``J^T J`` accumulated chunk
by chunk, which squares the condition number, where the in-memory fit factors ``J``. The
two agree to rounding amplified by ``cond(J)**2``: ``popt`` (relatively, entries near zero
to the largest one's scale) and ``pcov`` (scaled by the standard errors) are compared to
``GRAM_FACTOR * cond(J)**2 * eps``, floored at ``1e-12``, with ``J`` the weighted Jacobian
at the in-memory solution (:func:`gram_rtol`). The factor covers sums over ``m`` terms.
"""

import logging
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from nlsq import curve_fit, curve_fit_large
from nlsq.api.large import ChunkError
from nlsq.plan import budget, choose
from nlsq.solvers.trf import svd_from_gram, svd_of_scaled_jacobian

M = 20_011  # not a multiple of any chunk size used here
CHUNK = 4096
P0 = [1.0, 1.0, 0.0]


def model(x, a, b, c):
    return a * jnp.exp(-b * x) + c


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = np.linspace(0, 5, M)
    y = 2.5 * np.exp(-1.3 * x) + 0.5 + 0.05 * rng.standard_normal(M)
    return x, y


@pytest.fixture(scope="module")
def reference(data):
    return curve_fit(model, *data, p0=P0)


GRAM_FACTOR = 1e4
EPS = np.finfo(np.float64).eps


def gram_rtol(f, x, p, sigma=None) -> float:
    """The tolerance of the module docstring for model ``f`` at ``p``."""
    with jax.enable_x64(True):
        J = np.asarray(jax.jacfwd(lambda q: f(jnp.asarray(x), *q))(jnp.asarray(p, dtype=float)))
    if sigma is not None:
        J = J / np.asarray(sigma)[:, None]
    s = np.linalg.svd(J, compute_uv=False)
    return max(1e-12, GRAM_FACTOR * (s[0] / s[-1]) ** 2 * EPS)


def assert_same_fit(popt, pcov, ref_popt, ref_pcov, rtol):
    ref_popt = np.asarray(ref_popt)
    np.testing.assert_allclose(popt, ref_popt, rtol=rtol, atol=rtol * np.abs(ref_popt).max())
    # Covariance entries relative to the scale sqrt(C_ii C_jj) of their row and column.
    scale = np.sqrt(np.outer(np.diag(ref_pcov), np.diag(ref_pcov)))
    assert np.max(np.abs(pcov - ref_pcov) / scale) < rtol


def test_chunked_equals_in_memory(data, reference):
    popt, pcov = curve_fit_large(model, *data, p0=P0, chunk_size=CHUNK)
    assert_same_fit(popt, pcov, *reference, gram_rtol(model, data[0], reference[0]))


def test_tolerance_rule_rejects_a_wrong_fit(data, reference):
    rtol = gram_rtol(model, data[0], reference[0])
    assert rtol < 1e-9  # cond(J) ~ 7
    popt, pcov = reference
    with pytest.raises(AssertionError):
        assert_same_fit(popt * (1 + 1e-8), pcov, *reference, rtol)
    with pytest.raises(AssertionError):
        assert_same_fit(popt, pcov * (1 + 1e-8), *reference, rtol)


def test_chunked_matches_scipy(data, reference):
    popt, _ = scipy.optimize.curve_fit(lambda x, a, b, c: a * np.exp(-b * x) + c, *data, p0=P0)
    result = curve_fit_large(model, *data, p0=P0, chunk_size=CHUNK)
    np.testing.assert_allclose(result.popt, popt, rtol=1e-6)


@pytest.mark.parametrize("loss", ["linear", "soft_l1", "huber"])
def test_bounds_sigma_and_losses(data, loss):
    x, y = data
    options = dict(
        p0=P0,
        sigma=0.05 * (1 + x),
        bounds=([0, 0, -1], [10, 10, 1]),
        loss=loss,
        f_scale=2.0,
        x_scale="jac",
    )
    expected = curve_fit(model, x, y, **options)
    popt, pcov = curve_fit_large(model, x, y, chunk_size=CHUNK, **options)
    assert_same_fit(popt, pcov, *expected, gram_rtol(model, x, expected[0], options["sigma"]))


def test_active_bound(data):
    options = dict(p0=[1.0, 1.0, 0.8], bounds=([0, 0, 0.6], [10, 10, 1]))
    expected = curve_fit(model, *data, **options)
    popt, pcov = curve_fit_large(model, *data, chunk_size=CHUNK, **options)
    assert popt[2] == pytest.approx(0.6, rel=1e-6)
    assert_same_fit(popt, pcov, *expected, gram_rtol(model, data[0], expected[0]))


def test_curve_fit_chunk_size_option(data, reference):
    popt, pcov, infodict, _, ier = curve_fit(
        model, *data, p0=P0, chunk_size=CHUNK, full_output=True
    )
    assert_same_fit(popt, pcov, *reference, gram_rtol(model, data[0], reference[0]))
    assert ier in (1, 2, 3, 4)
    expected_residuals = curve_fit(model, *data, p0=P0, full_output=True)[2]["fvec"]
    np.testing.assert_allclose(infodict["fvec"], expected_residuals, rtol=1e-6, atol=1e-9)


def test_multidimensional_xdata():
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 2, (2, 9000))

    def plane(x, a, b, c):
        return a * x[0] + b * jnp.sin(x[1]) + c

    z = plane(xy, 1.5, -0.7, 0.2) + 0.01 * rng.standard_normal(9000)
    expected = curve_fit(plane, xy, np.asarray(z), p0=[1.0, 1.0, 1.0])
    popt, pcov = curve_fit_large(plane, xy, np.asarray(z), p0=[1.0, 1.0, 1.0], chunk_size=2000)
    assert_same_fit(popt, pcov, *expected, gram_rtol(plane, xy, expected[0]))


def test_automatic_selection(data, reference, monkeypatch, caplog):
    x, y = data
    assert not choose.use_chunked(model, None, _prepared(x, y), None)
    monkeypatch.setenv("NLSQ_MEMORY_BUDGET", "1MiB")
    assert choose.use_chunked(model, None, _prepared(x, y), None)
    with caplog.at_level(logging.INFO, logger="nlsq"):
        popt, pcov = curve_fit(model, x, y, p0=P0)
    assert "fitting in chunks" in caplog.text
    assert_same_fit(popt, pcov, *reference, gram_rtol(model, x, reference[0]))


def _prepared(x, y, **kwargs):
    from nlsq.prepare.arguments import prepare_curve_fit

    return prepare_curve_fit(
        model, x, y, P0, None, None, (-np.inf, np.inf), None, None, None, kwargs
    )


def test_memory_estimate_and_chunk_size():
    assert budget.in_memory_bytes(10**7, 3) > 2**30
    size = budget.default_chunk_size(10**8, 3, 8, 2**29)
    assert budget.MIN_CHUNK <= size <= budget.MAX_CHUNK
    assert budget.default_chunk_size(10**8, 3, 8, 2**40) == budget.MAX_CHUNK
    assert budget.default_chunk_size(100, 3, 8, 2**29) == 100


def test_unsupported_chunk_size_options(data):
    x, y = data
    with pytest.raises(ValueError, match="chunk_size"):
        curve_fit(model, x, y, p0=P0, chunk_size=CHUNK, method="dogbox")
    with pytest.raises(ValueError, match="chunk_size"):
        curve_fit(model, x, y, p0=P0, chunk_size=0)

    def centred(x, a, b, c):
        return a * (x - jnp.mean(x)) + b + c

    with pytest.raises(ValueError, match="point by point"):
        curve_fit(centred, x, y, p0=P0, chunk_size=CHUNK)


def test_memmap_equals_in_memory(data, reference, tmp_path):
    x, y = data
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    xm = np.load(tmp_path / "x.npy", mmap_mode="r")
    ym = np.load(tmp_path / "y.npy", mmap_mode="r")
    # Over the budget: streamed from the file one chunk at a time.
    popt, pcov = curve_fit_large(model, xm, ym, p0=P0, chunk_size=CHUNK, memory_budget="64KiB")
    assert_same_fit(popt, pcov, *reference, gram_rtol(model, x, reference[0]))


def test_chunk_source_equals_in_memory(data, reference):
    x, y = data
    calls = []

    def chunks():
        calls.append(1)
        for start in range(0, M, 3000):
            yield x[start : start + 3000], y[start : start + 3000]

    result = curve_fit_large(model, chunks, p0=P0)
    assert_same_fit(result.popt, result.pcov, *reference, gram_rtol(model, x, reference[0]))
    # One pass to check the chunks, then one per function evaluation.
    assert len(calls) == 1 + result.nfev + result.njev


def test_nan_chunk_is_named(data, tmp_path):
    x, y = data
    y = y.copy()
    y[2 * CHUNK + 5] = np.nan
    np.save(tmp_path / "y.npy", y)
    ym = np.load(tmp_path / "y.npy", mmap_mode="r")
    with pytest.raises(ChunkError, match=r"chunk 2 \(points 8192:12288\): ydata contains NaN"):
        curve_fit_large(model, x, ym, p0=P0, chunk_size=CHUNK, stream=True)
    with pytest.raises(ChunkError, match="chunk 2"):
        curve_fit_large(model, x, y, p0=P0, chunk_size=CHUNK)


def test_bad_chunk_shape_is_named(data):
    x, y = data

    def chunks():
        yield x[:100], y[:100]
        yield x[100:200], y[100:150]

    with pytest.raises(ChunkError, match=r"chunk 1 \(points 100:150\): xdata has shape"):
        curve_fit_large(model, chunks, p0=P0)


def test_progress_log_and_callback(data, caplog):
    seen = []

    def callback(intermediate_result):
        seen.append((intermediate_result.nit, intermediate_result.cost))

    with caplog.at_level(logging.INFO, logger="nlsq"):
        result = curve_fit_large(model, *data, p0=P0, chunk_size=CHUNK, callback=callback)
    assert "large fit: iteration 1, cost" in caplog.text
    assert "elapsed" in caplog.text
    assert [nit for nit, _ in seen] == list(range(1, len(seen) + 1))
    assert seen[-1][1] == pytest.approx(result.cost)


def test_callback_stops_the_fit(data):
    def callback(intermediate_result):
        raise StopIteration

    with pytest.raises(RuntimeError, match="callback"):
        curve_fit_large(model, *data, p0=P0, chunk_size=CHUNK, callback=callback)


def test_sharded_equals_single_device(tmp_path):
    script = textwrap.dedent(
        """
        import jax, jax.numpy as jnp, numpy as np
        from nlsq import curve_fit_large
        from nlsq.plan.placement import data_mesh

        def model(x, a, b, c):
            return a * jnp.exp(-b * x) + c

        assert jax.device_count() == 4
        assert data_mesh().size == 4
        rng = np.random.default_rng(0)
        x = np.linspace(0, 5, 20_011)
        y = 2.5 * np.exp(-1.3 * x) + 0.5 + 0.05 * rng.standard_normal(x.size)
        kw = dict(p0=[1.0, 1.0, 0.0], chunk_size=2048, bounds=([0, 0, -1], [9, 9, 1]))
        one = curve_fit_large(model, x, y, devices=1, **kw)
        four = curve_fit_large(model, x, y, **kw)
        np.testing.assert_allclose(four.popt, one.popt, rtol=1e-10)
        np.testing.assert_allclose(four.pcov, one.pcov, rtol=1e-9)
        print("ok")
        """
    )
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("ok")


def test_svd_from_gram_matches_dense(x64):
    rng = np.random.default_rng(2)
    J = rng.standard_normal((50, 4))
    f = rng.standard_normal(50)
    diag = rng.uniform(0.1, 1, 4)
    for d in (None, diag):
        s, V, uf = svd_of_scaled_jacobian(jnp.asarray(J), jnp.asarray(f), d)
        s2, V2, uf2 = svd_from_gram(jnp.asarray(J.T @ J), jnp.asarray(J.T @ f), d, 2.2e-16)
        np.testing.assert_allclose(s2, s, rtol=1e-12)
        signs = np.sign(np.sum(np.asarray(V) * np.asarray(V2), axis=0))
        np.testing.assert_allclose(np.asarray(V2) * signs, V, atol=1e-10)
        np.testing.assert_allclose(np.asarray(uf2) * signs, uf, atol=1e-10)


def test_svd_from_gram_rank_deficient(x64):
    J = np.ones((10, 2))
    s, _, uf = svd_from_gram(jnp.asarray(J.T @ J), jnp.asarray(J.T @ np.ones(10)), None, 2.2e-16)
    assert s[1] == 0 and uf[1] == 0
