"""Many threads fitting through the shared program cache at once.

Eight threads start together (a barrier) and fit four models at two data sizes;
several threads share each (model, size bucket), so they race to build and compile
the same program. Every answer must equal scipy's, no thread may hang (the test runs
under a timeout and joins with one), and the compilations counted by
``nlsq.cache_info()`` must not exceed one per distinct (model, bucket) program.
"""

from __future__ import annotations

import threading
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as so

import nlsq
from nlsq.execute import batched as batched_module
from nlsq.prepare import batch as prepare_batch_module
from nlsq.program.padding import bucket_size


def exp_decay(x, a, b):
    return a * jnp.exp(-b * x)


def exp_decay_jac(x, a, b):
    e = np.exp(-b * x)
    return np.stack([e, -a * x * e], axis=1)


def gaussian(x, a, mu, s):
    return a * jnp.exp(-((x - mu) ** 2) / (2 * s**2))


def gaussian_jac(x, a, mu, s):
    g = np.exp(-((x - mu) ** 2) / (2 * s**2))
    return np.stack([g, a * g * (x - mu) / s**2, a * g * (x - mu) ** 2 / s**3], axis=1)


def rational(x, a, b, c):
    return (a + b * x) / (1 + c * x)


def rational_jac(x, a, b, c):
    d = 1 + c * x
    return np.stack([1 / d, x / d, -x * (a + b * x) / d**2], axis=1)


def cubic(x, p0, p1, p2, p3):
    return p0 + x * (p1 + x * (p2 + x * p3))


def cubic_jac(x, p0, p1, p2, p3):
    return np.stack([np.ones_like(x), x, x**2, x**3], axis=1)


#: scipy's analytic Jacobians (nlsq differentiates the JAX models exactly).
JACOBIANS = {
    exp_decay: exp_decay_jac,
    gaussian: gaussian_jac,
    rational: rational_jac,
    cubic: cubic_jac,
}


MODELS = {
    exp_decay: (2.0, 1.3),
    gaussian: (3.0, 0.2, 0.7),
    rational: (1.0, 0.5, 0.3),
    cubic: (0.5, -1.0, 0.3, 0.8),
}
SIZES = (40, 300)  # buckets 64 and 512
N_THREADS = 8


def _problem(model, m: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    truth = np.asarray(MODELS[model])
    rng = np.random.default_rng(seed)
    x = np.linspace(0.0, 2.0, m)
    y = np.asarray(model(x, *truth)) + 0.01 * rng.standard_normal(m)
    return x, y, truth * 0.9 + 0.05


def _assignments() -> list[list[tuple]]:
    """Each thread's fits ``(model, size, seed)``: every (model, size) is fitted twice,
    by two different threads."""
    fits = [
        (model, m, 10 * k + j)
        for k, (model, m) in enumerate((model, m) for model in MODELS for m in SIZES)
        for j in range(2)
    ]
    return [fits[t::N_THREADS] for t in range(N_THREADS)]


@pytest.mark.timeout(300)
def _run_to_completion(threads: list, errors: list, hang_message: str) -> None:
    """Start ``threads``, wait for them (240 s each at most); none may hang or fail."""
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    assert not any(thread.is_alive() for thread in threads), hang_message
    assert not errors, errors


def test_threads_fit_through_the_shared_cache() -> None:
    assignments = _assignments()
    # scipy's answers first, with exact (analytic) Jacobians like nlsq's.
    expected = {}
    for work in assignments:
        for model, m, seed in work:
            x, y, p0 = _problem(model, m, seed)
            with warnings.catch_warnings(), jax.enable_x64(True):
                warnings.simplefilter("ignore")
                expected[(model, m, seed)] = so.curve_fit(
                    model, x, y, p0=p0, method="trf", jac=JACOBIANS[model]
                )
    distinct_programs = {(model, bucket_size(m)) for model in MODELS for m in SIZES}

    before = nlsq.cache_info()
    barrier = threading.Barrier(len(assignments))
    results: dict[tuple, tuple] = {}
    errors: list[BaseException] = []

    def worker(work: list[tuple]) -> None:
        try:
            barrier.wait(timeout=60)
            for model, m, seed in work:
                x, y, p0 = _problem(model, m, seed)
                results[(model, m, seed)] = nlsq.curve_fit(model, x, y, p0=p0)
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(w,), daemon=True) for w in assignments]
    _run_to_completion(threads, errors, "a fitting thread hangs")

    assert results.keys() == expected.keys()
    for key, (popt, pcov) in results.items():
        popt_s, pcov_s = expected[key]
        label = f"{key[0].__name__} m={key[1]} seed={key[2]}"
        np.testing.assert_allclose(popt, popt_s, rtol=1e-8, err_msg=label)
        np.testing.assert_allclose(pcov, pcov_s, rtol=1e-6, err_msg=label)

    after = nlsq.cache_info()
    compiles = after["total_compiles"] - before["total_compiles"]
    assert compiles <= len(distinct_programs), (compiles, len(distinct_programs))
    assert after["total_calls"] - before["total_calls"] == len(results)


@pytest.mark.timeout(120)
def test_program_cache_builds_once_per_key_under_contention() -> None:
    """Threads asking for one key at once all get the same program, built once."""
    from nlsq.cache import ProgramCache

    cache = ProgramCache(max_size=8)
    builds = []
    gate = threading.Barrier(N_THREADS)
    got = []

    def build():
        builds.append(threading.get_ident())
        return object()

    def worker() -> None:
        gate.wait(timeout=30)
        got.append(cache.get_or_build("key", build))

    threads = [threading.Thread(target=worker) for _ in range(N_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len({id(program) for program in got}) == 1
    assert len(got) == N_THREADS
    assert len(builds) == 1
    assert cache.misses == 1 and cache.hits == N_THREADS - 1


@pytest.mark.timeout(300)
@pytest.mark.parametrize("factorisation", ["lapack", "small_linalg"])
def test_two_threads_run_batches_at_once(factorisation, monkeypatch) -> None:
    """Two threads calling ``curve_fit_batch`` together both finish (XLA:CPU can
    deadlock when two vmapped LAPACK programs are in flight at once), with scipy's
    answers; a batch of :mod:`nlsq.small_linalg` runs its own chunks on two threads."""
    if factorisation == "small_linalg":
        monkeypatch.setattr(prepare_batch_module, "small_linalg_min_fits", lambda: 1)
        monkeypatch.setattr(batched_module, "host_cores", lambda: 2)
    n_fits, m, rounds = 600, 64, 3
    x = np.linspace(-2.0, 2.0, m)
    rng = np.random.default_rng(5)
    truth = np.column_stack(
        [
            rng.uniform(1, 3, 2 * n_fits),
            rng.uniform(-0.5, 0.5, 2 * n_fits),
            rng.uniform(0.5, 1, 2 * n_fits),
        ]
    )
    y = np.stack([np.asarray(gaussian(x, *t)) for t in truth])
    y += 0.01 * rng.standard_normal(y.shape)
    halves = (slice(0, n_fits), slice(n_fits, 2 * n_fits))
    p0 = truth * 0.9 + 0.05
    nlsq.curve_fit_batch(gaussian, x, y[:n_fits], p0=p0[:n_fits], fits_per_chunk=256)
    barrier = threading.Barrier(2)
    results: dict[int, list] = {0: [], 1: []}
    errors: list[BaseException] = []

    def worker(half: int) -> None:
        try:
            for _ in range(rounds):
                barrier.wait(timeout=60)
                part = halves[half]
                results[half].append(
                    nlsq.curve_fit_batch(gaussian, x, y[part], p0=p0[part], fits_per_chunk=256)
                )
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(h,), daemon=True) for h in (0, 1)]
    _run_to_completion(threads, errors, "a batch thread hangs")
    for half, part in enumerate(halves):
        assert len(results[half]) == rounds
        for index in (0, n_fits // 2, n_fits - 1):
            fit = part.start + index
            with warnings.catch_warnings(), jax.enable_x64(True):
                warnings.simplefilter("ignore")
                popt, pcov = so.curve_fit(
                    gaussian, x, y[fit], p0=p0[fit], method="trf", jac=gaussian_jac
                )
            for result in results[half]:
                assert result.success[index]
                np.testing.assert_allclose(result.popt[index], popt, rtol=1e-8)
                np.testing.assert_allclose(result.pcov[index], pcov, rtol=1e-6)


@pytest.mark.timeout(120)
def test_a_progress_callback_may_run_a_batch() -> None:
    """The lock that keeps batches of different threads apart lets the thread that
    holds it run another batch (from its progress callback)."""
    x = np.linspace(-2.0, 2.0, 32)
    truth = np.array([[2.0, 0.1, 0.7], [1.5, -0.2, 0.9]])
    y = np.stack([np.asarray(gaussian(x, *t)) for t in truth])
    inner = []

    def progress(done: int, total: int) -> None:
        inner.append(nlsq.curve_fit_batch(gaussian, x, y, p0=truth * 0.9).popt)

    outer = nlsq.curve_fit_batch(gaussian, x, y, p0=truth * 0.9, progress=progress)
    assert len(inner) == 1
    # Exact data: both fits find the true parameters (to the default tolerances).
    np.testing.assert_allclose(inner[0], truth, rtol=1e-6)
    np.testing.assert_allclose(outer.popt, truth, rtol=1e-6)
