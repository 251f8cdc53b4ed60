"""Running a batch: chunks of fits through one vmapped program, progress after each."""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jax
import numpy as np

from nlsq.prepare.options import ValidatedOptions
from nlsq.program.context import device_scope
from nlsq.program.run import SCALAR_FIELDS
from nlsq.program.spec import BatchLayout

logger = logging.getLogger("nlsq")

#: What to do when a batch runs out of memory.
BATCH_ADVICE = (
    "A batch holds every fit of a chunk at once. Use fewer fits per compiled call "
    "(fits_per_chunk=...) or a lower memory budget (memory_budget=..., setting "
    "large.memory_budget, environment variable NLSQ_MEMORY_BUDGET)."
)


#: Held while a batch has programs in flight. Two threads running vmapped batch
#: programs at once can deadlock inside XLA:CPU (both wait forever for their
#: results), so batches from different threads run one after the other. Reentrant:
#: a progress callback may itself run a batch.
_IN_FLIGHT = threading.RLock()


class BatchProgress:
    """Reports finished fits to the logger, a callback and (optionally) tqdm."""

    def __init__(self, total: int, chunks: int, progress: bool | Callable | None) -> None:
        self.total, self.chunks = total, chunks
        self.callback = progress if callable(progress) else None
        self.bar = None
        self.start = time.perf_counter()
        if progress is True:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                logger.debug("tqdm is not installed; progress goes to the 'nlsq' logger only")
            else:
                self.bar = tqdm(total=total, unit="fit", desc="curve_fit_batch")

    def update(self, done: int, chunk: int, newly: int) -> None:
        level = logging.INFO if self.chunks > 1 else logging.DEBUG
        logger.log(
            level,
            "curve_fit_batch: %d/%d fits done (chunk %d/%d, %.2f s)",
            done,
            self.total,
            chunk,
            self.chunks,
            time.perf_counter() - self.start,
        )
        if self.bar is not None:
            self.bar.update(newly)
        if self.callback is not None:
            self.callback(done, self.total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _take(
    array: np.ndarray | None, per_fit: bool, index: np.ndarray, dtype: Any = None
) -> np.ndarray | None:
    """The rows ``index`` of a per-fit input (cast to ``dtype``); a shared one as it is."""
    if not per_fit or array is None:
        return array
    return np.asarray(array[index], dtype=dtype)


def _one_batch_at_a_time(run: Callable) -> Callable:
    """``run`` holding :data:`_IN_FLIGHT`: batches from several threads run one after
    the other."""

    @functools.wraps(run)
    def serialised(*args: Any, **kwargs: Any) -> Any:
        if not _IN_FLIGHT.acquire(blocking=False):
            logger.debug("curve_fit_batch: waiting for another thread's batch to finish")
            _IN_FLIGHT.acquire()
        try:
            return run(*args, **kwargs)
        finally:
            _IN_FLIGHT.release()

    return serialised


def host_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def chunk_workers(small_linalg: bool, chunks: int) -> int:
    """Threads that may run a batch's chunks at once: one per core on a CPU backend for
    a program factorised with :mod:`nlsq.small_linalg`, else one.

    One thread leaves a core idle: XLA:CPU runs one program at a time per thread.
    Vmapped LAPACK calls deadlock XLA:CPU when two threads run them at once, so only
    programs without them may run concurrently (see :func:`calls_custom_kernels` for
    what the model itself calls).
    """
    if not small_linalg or chunks < 2 or jax.default_backend() != "cpu":
        return 1
    return max(1, min(host_cores(), chunks))


#: Whether a compiled batch program calls custom kernels, by program.
_CUSTOM_KERNELS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def calls_custom_kernels(program: Callable, *args: Any) -> bool:
    """Whether the lowered ``program`` calls a custom kernel (LAPACK, an FFT, a Python
    callback): a model may, even where nlsq's own factorisations do not. Lowered once
    per program (the answer does not depend on the shapes)."""
    known = _CUSTOM_KERNELS.get(program)
    if known is None:
        known = "custom_call" in program.lower(*args).as_text()
        _CUSTOM_KERNELS[program] = known
    return known


@_one_batch_at_a_time
def run_batch_chunks(
    program: Callable,
    arrays: dict[str, Any],
    layout: BatchLayout,
    options: ValidatedOptions,
    run: np.ndarray,
    length: int,
    progress: BatchProgress,
    workers: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Run the fits ``run`` (indices) in chunks of ``length``; summaries and pcov.

    The last chunk is filled up with copies of its first fit, so that every call has
    the compiled shape; the copies' results are dropped. With several ``workers``
    (threads, see :func:`chunk_workers`), that many chunks run at once unless the
    program calls custom kernels; results and progress are taken in order in the
    calling thread. Batches called from several threads at once run one after the
    other.
    """
    real = options.dtype
    inputs = options.inputs
    scalars = inputs.controls(real)
    n = inputs.x0.size
    # Filled chunk by chunk: the host holds one copy of the results, never a list of
    # chunks and their concatenation.
    summaries = np.empty((run.size, 3 * n + len(SCALAR_FIELDS)), real)
    covariances = np.empty((run.size, n, n), real)

    def arguments(start: int) -> tuple:
        index = run[start : start + length]
        if index.size < length:
            index = np.concatenate([index, np.full(length - index.size, index[0])])
        data = (
            _take(arrays["xdata"], layout.x_per_fit, index, real),
            _take(arrays["ydata"], True, index, real),
            _take(arrays["transform"], layout.sigma_per_fit, index, real),
        )
        lb = _take(arrays["lb"], layout.bounds_per_fit, index)
        ub = _take(arrays["ub"], layout.bounds_per_fit, index)
        residuals = arrays["n_residuals"][index] if layout.padded else None
        return arrays["x0"][index], lb, ub, data, *scalars, residuals

    def dispatch(start: int) -> Any:
        with device_scope(BATCH_ADVICE):
            summary, _, _, pcov = program(*arguments(start))
        return summary, pcov

    def fetch(outputs: Any) -> Any:
        with device_scope(BATCH_ADVICE):
            return jax.device_get(outputs)

    def store(start: int, outputs: Any) -> None:
        count = min(length, run.size - start)
        summary, pcov = outputs
        summaries[start : start + count] = np.asarray(summary)[:count]
        covariances[start : start + count] = np.asarray(pcov)[:count]
        # Chunks come back in order: everything before this one is done.
        progress.update(start + count, start // length + 1, count)

    starts = range(0, run.size, length)
    if workers > 1:
        with device_scope(BATCH_ADVICE):
            if calls_custom_kernels(program, *arguments(0)):
                workers = 1
    if workers > 1:
        _run_concurrently(starts, lambda start: fetch(dispatch(start)), store, workers)
    else:
        _run_pipelined(starts, dispatch, fetch, store)
    return summaries, covariances


def _run_pipelined(starts: range, dispatch: Callable, fetch: Callable, store: Callable) -> None:
    """One chunk in flight while the previous one's results come back."""
    pending: list = []
    for start in starts:
        pending.append((start, dispatch(start)))
        if len(pending) > 1:
            done, outputs = pending.pop(0)
            store(done, fetch(outputs))
    for done, outputs in pending:
        store(done, fetch(outputs))


def _run_concurrently(starts: range, run_chunk: Callable, store: Callable, workers: int) -> None:
    """``workers`` threads run chunks; each result is stored, in order, by this thread
    (so that a progress callback runs where the batch was called).

    The first chunk runs here alone: a compile it causes is counted for this call
    (compile statistics are per thread) and happens once.
    """
    store(starts[0], run_chunk(starts[0]))
    with ThreadPoolExecutor(workers, thread_name_prefix="nlsq-batch") as pool:
        pending: list = []
        try:
            for start in starts[1:]:
                pending.append((start, pool.submit(run_chunk, start)))
                if len(pending) > workers:
                    done, future = pending.pop(0)
                    store(done, future.result())
            for done, future in pending:
                store(done, future.result())
        finally:
            for _, future in pending:
                future.cancel()
