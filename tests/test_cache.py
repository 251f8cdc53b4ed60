"""The program memo: repeated fits reuse one compiled solver."""

from __future__ import annotations

import threading

import jax.numpy as jnp
import numpy as np

import nlsq
from nlsq.cache import ProgramCache, programs


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
