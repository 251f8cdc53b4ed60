"""The program memo: repeated fits reuse one compiled solver."""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as so

import nlsq
from nlsq import pointwise
from nlsq.cache import ProgramCache, programs, repeat_plans, stats
from nlsq.identity import model_key
from nlsq.program import padding as padding_module
from nlsq.program.padding import bucket_size

#: Settings that change what these tests count; the disk-cache ones are left alone (the
#: process-wide persistent cache is configured once, by whichever fit comes first).


def _decay(x, a, b):
    return a * jnp.exp(-b * x)


def _data(seed: int, m: int = 50) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.linspace(0, 3, m)
    return x, 2.0 * np.exp(-0.7 * x) + 0.01 * rng.standard_normal(m)


def test_same_model_and_shape_builds_one_program() -> None:
    x, y = _data(0)
    nlsq.curve_fit(_decay, x, y, p0=[1, 1])
    misses = programs.misses
    for seed in range(1, 6):
        x, y = _data(seed)
        nlsq.curve_fit(_decay, x, y, p0=[1.5, 0.5])
    assert programs.misses == misses


def test_options_that_change_the_program_are_separate_entries() -> None:
    x, y = _data(0)
    nlsq.curve_fit(_decay, x, y, p0=[1, 1])
    misses = programs.misses
    nlsq.curve_fit(_decay, x, y, p0=[1, 1], loss="soft_l1")
    nlsq.curve_fit(_decay, x, y, p0=[1, 1], bounds=(0, 10))
    assert programs.misses == misses + 2


def test_lru_drops_the_least_recently_used() -> None:
    cache = ProgramCache(max_size=2)
    cache.get_or_build("a", lambda: 1)
    cache.get_or_build("b", lambda: 2)
    cache.get_or_build("a", lambda: 0)  # hit: "a" becomes most recent
    cache.get_or_build("c", lambda: 3)  # evicts "b"
    assert len(cache) == 2
    assert cache.get_or_build("a", lambda: -1) == 1
    assert cache.get_or_build("b", lambda: 22) == 22


def test_unhashable_key_is_built_but_not_stored() -> None:
    cache = ProgramCache()
    assert cache.get_or_build(None, lambda: "fresh") == "fresh"
    assert len(cache) == 0


def test_concurrent_builds_keep_one_program() -> None:
    cache = ProgramCache()
    results = []

    def worker(value: int) -> None:
        results.append(cache.get_or_build("key", lambda: value))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(results)) == 1
    assert len(cache) == 1


# --------------------------------------------------------------------------------------
# Compile counts, size buckets and parity with scipy
#
# The test process may load programs from the persistent cache (a warm user cache dir),
# so a first call counts as "not a hit": ``compiles + disk_hit == 1``. Later calls must
# be hits: nothing compiled and nothing loaded.
# --------------------------------------------------------------------------------------

POPT_RTOL = 1e-8
PCOV_RTOL = 1e-8


def _loads(cache_stats: dict) -> int:
    """Programs this call compiled or loaded from disk."""
    return cache_stats["compiles"] + int(cache_stats["disk_hit"])


@dataclass(frozen=True)
class Twin:
    """A model in jax.numpy (for nlsq) and NumPy with its Jacobian (for scipy)."""

    name: str
    jax_f: Callable
    np_f: Callable
    np_jac: Callable
    p_true: tuple
    p0: tuple
    rows: int = 1  # xdata rows: 1 means shape (m,), k means (k, m)

    def data(self, m: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        if self.rows == 1:
            x = np.linspace(0.0, 4.0, m)
        else:
            x = np.stack([np.linspace(0.0, 4.0, m), rng.uniform(0.0, 3.0, m)])
        y = self.np_f(x, *self.p_true)
        return x, y + 0.02 * rng.standard_normal(m)


def _twin(name, factory, p_true, p0, rows=1) -> Twin:
    jax_f, _ = factory(jnp)
    np_f, np_jac = factory(np)
    return Twin(name, jax_f, np_f, np_jac, p_true, p0, rows)


def _decay3(xp):
    def f(x, a, b, c):
        return a * xp.exp(-b * x) + c

    def jac(x, a, b, c):
        e = xp.exp(-b * x)
        return xp.stack([e, -a * x * e, xp.ones_like(x)], axis=1)

    return f, jac


def _gaussian(xp):
    def f(x, a, mu, s):
        return a * xp.exp(-0.5 * ((x - mu) / s) ** 2)

    def jac(x, a, mu, s):
        g = xp.exp(-0.5 * ((x - mu) / s) ** 2)
        return xp.stack([g, a * g * (x - mu) / s**2, a * g * (x - mu) ** 2 / s**3], axis=1)

    return f, jac


def _logistic(xp):
    def f(x, a, k, x0):
        return a / (1 + xp.exp(-k * (x - x0)))

    def jac(x, a, k, x0):
        e = xp.exp(-k * (x - x0))
        d = (1 + e) ** 2
        return xp.stack([1 / (1 + e), a * (x - x0) * e / d, -a * k * e / d], axis=1)

    return f, jac


def _two_rows(xp):
    def f(x, a, b, c):
        return a * x[0] + b * xp.exp(-c * x[1])

    def jac(x, a, b, c):
        e = xp.exp(-c * x[1])
        return xp.stack([x[0], e, -b * x[1] * e], axis=1)

    return f, jac


DECAY = _twin("decay", _decay3, (2.5, 1.3, 0.5), (1.0, 1.0, 0.0))
GAUSSIAN = _twin("gaussian", _gaussian, (3.0, 2.0, 0.7), (2.0, 1.5, 1.0))
LOGISTIC = _twin("logistic", _logistic, (4.0, 2.0, 2.0), (3.0, 1.0, 1.5))
TWO_ROWS = _twin("two-rows", _two_rows, (0.7, 2.0, 1.1), (1.0, 1.0, 1.0), rows=2)


def _scipy_fit(twin: Twin, x, y, **kwargs):
    popt, pcov, info, _, status = so.curve_fit(
        twin.np_f, x, y, p0=twin.p0, jac=twin.np_jac, method="trf", full_output=True, **kwargs
    )
    return popt, pcov, info["nfev"], status


def _assert_equals_scipy(twin: Twin, result, x, y, **kwargs) -> None:
    popt, pcov, nfev, status = _scipy_fit(twin, x, y, **kwargs)
    np.testing.assert_allclose(result.popt, popt, rtol=POPT_RTOL)
    np.testing.assert_allclose(result.pcov, pcov, rtol=PCOV_RTOL)
    assert (result.nfev, result.status) == (nfev, status)


@pytest.fixture
def pad_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Shapes ``(xdata, ydata)`` after each padding to a size bucket."""
    calls: list[tuple] = []
    original = padding_module.pad_to_bucket

    def spy(xdata, ydata, kind, transform, size):
        out = original(xdata, ydata, kind, transform, size)
        calls.append((out[0].shape, out[1].shape))
        return out

    monkeypatch.setattr(padding_module, "pad_to_bucket", spy)
    return calls


def _sinc_model(x, a, b):
    # Used by one test only, so its first fit is never a hit in memory.
    return a * jnp.sinc(b * x)


def test_same_function_compiles_once_for_twenty_fits() -> None:
    calls, hits = stats.calls, stats.hits
    x = np.linspace(-3, 3, 200)
    results = []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        y = 2.0 * np.sinc(0.8 * x) + 0.01 * rng.standard_normal(x.size)
        results.append(nlsq.CurveFit(_sinc_model, p0=[1.0, 1.0]).fit(x, y))
    first, rest = results[0].cache_stats, [r.cache_stats for r in results[1:]]
    assert _loads(first) == 1 and not first["hit"]
    assert all(s["hit"] and s["compiles"] == 0 and not s["disk_hit"] for s in rest)
    assert sum(s["compiles"] for s in rest) == 0
    assert (stats.calls - calls, stats.hits - hits) == (20, 19)
    for r in results:
        np.testing.assert_allclose(r.popt, [2.0, 0.8], rtol=0.02)


def test_new_lambda_per_call_with_identical_code_hits() -> None:
    x = np.linspace(-2, 2, 90)
    y = 1.5 * np.tanh(1.7 * x)
    stats_per_call = []
    for _ in range(4):
        popt, _, info, _, _ = nlsq.curve_fit(
            lambda x, a, b: a * jnp.tanh(b * x), x, y, p0=[1.0, 1.0], full_output=True
        )
        np.testing.assert_allclose(popt, [1.5, 1.7], rtol=1e-8)
        stats_per_call.append(info["cache_stats"])
    # Written again on another line: a different code object with the same bytecode.
    popt, _, info, _, _ = nlsq.curve_fit(
        lambda x, a, b: a * jnp.tanh(b * x), x, y, p0=[1.0, 1.0], full_output=True
    )
    stats_per_call.append(info["cache_stats"])
    assert _loads(stats_per_call[0]) == 1
    assert all(s["hit"] for s in stats_per_call[1:])


def test_random_lengths_share_two_bucket_programs_and_match_scipy() -> None:
    rng = np.random.default_rng(20240521)
    lengths = [1001, 1023, *rng.integers(1000, 2000, size=48).tolist()]
    assert 1024 not in lengths  # see test_power_of_two_length_shares_its_bucket_program
    fitter = nlsq.CurveFit(DECAY.jax_f, p0=DECAY.p0)
    loads = 0
    for seed, m in enumerate(lengths):
        x, y = DECAY.data(m, seed)
        result = fitter.fit(x, y)
        loads += _loads(result.cache_stats)
        assert result.residuals.shape == (m,)
        _assert_equals_scipy(DECAY, result, x, y)
    assert loads <= 2


@pytest.mark.parametrize("m", [1010, 1500])
def test_padded_fit_equals_unpadded_fit(m: int, monkeypatch, pad_calls) -> None:
    x, y = DECAY.data(m, seed=m)
    padded = nlsq.CurveFit(DECAY.jax_f, p0=DECAY.p0).fit(x, y)
    assert pad_calls[-1] == ((bucket_size(m),), (bucket_size(m),))
    monkeypatch.setenv("NLSQ_SIZE_BUCKETS", "0")
    exact = nlsq.CurveFit(DECAY.jax_f, p0=DECAY.p0).fit(x, y)
    assert len(pad_calls) == 1
    np.testing.assert_allclose(padded.popt, exact.popt, rtol=1e-10)
    np.testing.assert_allclose(padded.pcov, exact.pcov, rtol=1e-8)
    np.testing.assert_allclose(padded.residuals, exact.residuals, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(padded.cost, exact.cost, rtol=1e-10)
    assert (padded.nfev, padded.status) == (exact.nfev, exact.status)
    assert padded.jac.shape == exact.jac.shape == (m, 3)


def test_power_of_two_length_shares_its_bucket_program() -> None:
    fitter = nlsq.CurveFit(DECAY.jax_f, p0=DECAY.p0)
    fitter.fit(*DECAY.data(1000, seed=0))  # bucket 1024, padded
    result = fitter.fit(*DECAY.data(1024, seed=1))  # bucket 1024, exact length
    assert result.cache_stats["hit"]


def test_two_row_xdata_is_padded_along_the_last_axis(pad_calls) -> None:
    fitter = nlsq.CurveFit(TWO_ROWS.jax_f, p0=TWO_ROWS.p0)
    results = []
    for seed, m in enumerate((300, 420, 511)):
        x, y = TWO_ROWS.data(m, seed)
        result = fitter.fit(x, y)
        _assert_equals_scipy(TWO_ROWS, result, x, y)
        results.append(result)
    assert pad_calls == [((2, 512), (512,))] * 3
    assert all(r.cache_stats["hit"] for r in results[1:])


def _centred(x, a, b):
    return a * (x - x.mean()) + b


@pytest.mark.parametrize(
    "model",
    [
        _centred,
        lambda x, a: a * x / x.size,
        lambda x, a: a * x[::-1],
        lambda x, a: a * (x - jnp.median(x)),
        lambda x, a: a * jnp.sum(x) + 0 * x,
    ],
    ids=["mean", "size", "reversed", "median", "sum"],
)
def test_models_that_are_not_pointwise_are_detected(model) -> None:
    x = np.linspace(0.5, 3.0, 100)
    p0 = np.ones(len(inspect.signature(model).parameters) - 1)
    assert not pointwise.acts_pointwise_once(model, model_key(model), x, p0)


@pytest.mark.parametrize(
    "model",
    [
        lambda x, a: a * jnp.exp(-x),
        lambda x, a: a * (x - x[0]),  # edge padding keeps x[0] and x[-1]
        lambda x, a: a * x / jnp.max(x),  # ... and the extrema
        lambda x, a: a * jnp.cumsum(x),  # appended points do not change earlier ones
    ],
    ids=["exp", "first", "max", "cumsum"],
)
def test_pointwise_models_are_padded(model) -> None:
    x = np.linspace(0.5, 3.0, 100)
    assert pointwise.acts_pointwise_once(model, model_key(model), x, np.ones(1))


def test_non_pointwise_model_is_not_padded_and_matches_scipy(pad_calls) -> None:
    x = np.linspace(0.0, 5.0, 100)
    y = 1.7 * (x - x.mean()) + 0.3 + 0.01 * np.cos(5 * x)

    def np_centred(x, a, b):
        return a * (x - x.mean()) + b

    def np_jac(x, a, b):
        return np.stack([x - x.mean(), np.ones_like(x)], axis=1)

    result = nlsq.CurveFit(_centred, p0=[1.0, 0.0]).fit(x, y)
    assert pad_calls == []
    popt, pcov = so.curve_fit(np_centred, x, y, p0=[1.0, 0.0], jac=np_jac, method="trf")
    np.testing.assert_allclose(result.popt, popt, rtol=POPT_RTOL)
    np.testing.assert_allclose(result.pcov, pcov, rtol=1e-6)


def _ar1_covariance(m: int, rho: float = 0.6) -> np.ndarray:
    i = np.arange(m)
    scale = 0.02 * (1.0 + 0.5 * np.sin(i))
    return rho ** np.abs(i[:, None] - i[None, :]) * np.outer(scale, scale)


@pytest.mark.parametrize("kind", ["1-d", "2-d", "scalar"])
def test_sigma_with_padding_matches_scipy(kind: str, pad_calls) -> None:
    m = 100
    x, y = GAUSSIAN.data(m, seed=11)
    sigma = {
        "1-d": 0.02 * (1.0 + 0.5 * np.sin(np.arange(m))),
        "2-d": _ar1_covariance(m),
        # scipy fails on a 0-d sigma with a callable jac (solve_triangular on a
        # scalar); a one-element sigma takes the same path in both.
        "scalar": np.array([0.05]),
    }[kind]
    fitter = nlsq.CurveFit(GAUSSIAN.jax_f, p0=GAUSSIAN.p0)
    for absolute_sigma in (False, True):
        result = fitter.fit(x, y, sigma=sigma, absolute_sigma=absolute_sigma)
        _assert_equals_scipy(GAUSSIAN, result, x, y, sigma=sigma, absolute_sigma=absolute_sigma)
        assert result.cache_stats["hit"] or not absolute_sigma
    assert pad_calls and all(shapes == ((128,), (128,)) for shapes in pad_calls)


def test_concurrent_fits_are_correct_and_do_not_deadlock() -> None:
    jobs = [
        (DECAY, 300),
        (DECAY, 400),
        (GAUSSIAN, 700),
        (GAUSSIAN, 900),
        (LOGISTIC, 60),
        (LOGISTIC, 50),
        (TWO_ROWS, 150),
        (TWO_ROWS, 250),
    ]
    data = [twin.data(m, seed) for seed, (twin, m) in enumerate(jobs)]
    results: list = [None] * len(jobs)
    barrier = threading.Barrier(len(jobs))

    def work(i: int) -> None:
        twin = jobs[i][0]
        try:
            barrier.wait(timeout=60)
            results[i] = nlsq.curve_fit(twin.jax_f, *data[i], p0=twin.p0, full_output=True)
        except BaseException as error:  # reported below, in the main thread
            results[i] = error

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 240
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not any(thread.is_alive() for thread in threads), "fits did not finish: deadlock?"
    for (twin, _), (x, y), result in zip(jobs, data, results, strict=True):
        assert not isinstance(result, BaseException), repr(result)
        popt, pcov, info, _, status = result
        ref_popt, ref_pcov, ref_nfev, ref_status = _scipy_fit(twin, x, y)
        np.testing.assert_allclose(popt, ref_popt, rtol=POPT_RTOL)
        np.testing.assert_allclose(pcov, ref_pcov, rtol=PCOV_RTOL)
        assert (info["nfev"], status) == (ref_nfev, ref_status)


def test_cache_info_and_clear_cache() -> None:
    x, y = DECAY.data(200, seed=5)
    nlsq.curve_fit(DECAY.jax_f, x, y, p0=DECAY.p0)  # make sure something is cached
    assert nlsq.cache_info()["programs"] >= 1
    nlsq.clear_cache()
    info = nlsq.cache_info()
    assert set(info) == {
        "programs",
        "max_size",
        "total_calls",
        "total_hits",
        "total_compiles",
        "total_disk_hits",
        "total_compile_time_ms",
        "hit_rate",
        "disk_cache_dir",
    }
    assert info["programs"] == 0
    assert info["max_size"] == programs.max_size
    assert info["total_calls"] == info["total_hits"] == info["total_compiles"] == 0
    assert info["total_disk_hits"] == 0 and info["total_compile_time_ms"] == 0.0
    assert info["hit_rate"] == 0.0
    assert info["disk_cache_dir"] is None or isinstance(info["disk_cache_dir"], str)
    assert (programs.hits, programs.misses) == (0, 0)

    first = nlsq.CurveFit(DECAY.jax_f, p0=DECAY.p0).fit(x, y)  # rebuilt after the clear
    second = nlsq.CurveFit(DECAY.jax_f, p0=DECAY.p0).fit(x, y)
    assert _loads(first.cache_stats) == 1 and second.cache_stats["hit"]
    info = nlsq.cache_info()
    assert info["programs"] == 1
    assert info["total_calls"] == 2 and info["total_hits"] == 1
    assert info["total_compiles"] + info["total_disk_hits"] == 1
    assert info["hit_rate"] == 0.5
    # Compile time counts real compiles only, not loads from the disk cache.
    assert (info["total_compile_time_ms"] > 0.0) == (info["total_compiles"] == 1)
    # The second fit repeats the first one's plan, which holds the program.
    assert (programs.hits, programs.misses) == (0, 1)
    assert repeat_plans.hits == 1
    np.testing.assert_array_equal(first.popt, second.popt)

    nlsq.clear_cache()
    assert nlsq.cache_info()["programs"] == 0 and nlsq.cache_info()["total_calls"] == 0


def test_full_output_infodict_carries_cache_stats() -> None:
    x, y = DECAY.data(200, seed=6)
    nlsq.curve_fit(DECAY.jax_f, x, y, p0=DECAY.p0)
    *_, info, _, _ = nlsq.curve_fit(DECAY.jax_f, x, y, p0=DECAY.p0, full_output=True)
    cache_stats = info["cache_stats"]
    assert {"hit", "compiles", "disk_hit", "compile_time_ms", "hit_rate"} <= set(cache_stats)
    assert {"total_calls", "total_hits", "total_compiles", "total_disk_hits"} <= set(cache_stats)
    assert "total_compile_time_ms" in cache_stats
    assert cache_stats["hit"] is True and cache_stats["compiles"] == 0
    assert cache_stats["disk_hit"] is False and cache_stats["compile_time_ms"] == 0.0
    assert cache_stats["total_calls"] == stats.calls
    assert 0.0 < cache_stats["hit_rate"] <= 1.0


def test_max_size_comes_from_the_configuration(monkeypatch) -> None:
    assert programs.max_size == 128
    monkeypatch.setenv("NLSQ_CACHE_MAX_SIZE", "3")
    assert programs.max_size == 3
    assert nlsq.cache_info()["max_size"] == 3
    # The process-wide cache reads it at each insertion; so does any unsized cache.
    cache = ProgramCache(max_size=None)
    for key in "abcde":
        cache.get_or_build(key, lambda key=key: key)
    assert len(cache) == 3
    assert cache.get_or_build("a", lambda: "rebuilt") == "rebuilt"  # evicted
    assert cache.get_or_build("e", lambda: "rebuilt") == "e"  # kept
    monkeypatch.setenv("NLSQ_CACHE_MAX_SIZE", "5")
    for key in "vwxyz":
        cache.get_or_build(key, lambda key=key: key)
    assert len(cache) == 5


def test_cache_disabled_builds_a_fresh_program_every_call(monkeypatch) -> None:
    monkeypatch.setenv("NLSQ_CACHE_ENABLE", "0")
    x, y = DECAY.data(200, seed=7)
    size, hits, misses = len(programs), programs.hits, programs.misses
    results = [nlsq.CurveFit(DECAY.jax_f, p0=DECAY.p0).fit(x, y) for _ in range(2)]
    assert (len(programs), programs.hits, programs.misses) == (size, hits, misses)
    assert all(not r.cache_stats["hit"] for r in results)
    assert all(_loads(r.cache_stats) == 1 for r in results)
    np.testing.assert_array_equal(results[0].popt, results[1].popt)
    _assert_equals_scipy(DECAY, results[0], x, y)


@pytest.mark.parametrize(
    ("m", "expected"),
    [
        (1, 16),
        (16, 16),
        (17, 32),
        (1000, 1024),
        (1024, 1024),
        (1025, 2048),
        (8192, 8192),
        (8193, 9216),
        (10_000, 10_240),
        (65536, 65536),
        (65537, 73728),
        (100_000, 106_496),
        (1_000_000, 1_048_576),
    ],
)
def test_bucket_sizes(m: int, expected: int) -> None:
    assert bucket_size(m) == expected
    # Bounded waste: at most double up to 2**13, at most 12.5% above.
    assert m <= bucket_size(m) <= (2 * m if m <= 1 << 13 else 1.125 * m) or m < 16
