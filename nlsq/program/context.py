"""The one execution context of every call into a compiled program."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import jax

from nlsq.cache import CallStats, ensure_disk_cache, track_compiles
from nlsq.errors import out_of_memory_advice, plain_input_errors


def _device_contexts(advice: str) -> tuple:
    """64-bit mode (thread-local, so nlsq's own calls only), trace-time input errors as
    scipy's plain exceptions and out-of-memory errors as :class:`nlsq.FitMemoryError`
    with ``advice``."""
    return jax.enable_x64(True), plain_input_errors(), out_of_memory_advice(advice)


@contextlib.contextmanager
def device_scope(advice: str) -> Iterator[None]:
    """Around each dispatch into a compiled program and each fetch of its results
    (see :func:`_device_contexts`)."""
    x64, plain_errors, memory_advice = _device_contexts(advice)
    with x64, plain_errors, memory_advice:
        yield


@contextlib.contextmanager
def counted_run() -> Iterator[CallStats]:
    """One fit (or batch): the persistent cache set up, its compiles counted."""
    ensure_disk_cache()
    with track_compiles() as call:
        yield call


@contextlib.contextmanager
def program_run(advice: str) -> Iterator[CallStats]:
    """:func:`counted_run` and :func:`device_scope` together, for a single call (one
    level of context managers: this runs on every fit)."""
    ensure_disk_cache()
    x64, plain_errors, memory_advice = _device_contexts(advice)
    with x64, plain_errors, memory_advice, track_compiles() as call:
        yield call
