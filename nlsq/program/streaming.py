"""The host side of a running chunked fit: streamed chunks and per-iteration progress.

A streamed fit loads each chunk through ``io_callback`` once per evaluation; the
compiled program passes a token that names the fit's :class:`StreamedFit` here.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import io_callback

from nlsq.errors import ChunkError
from nlsq.program.callback import CallbackWrapper
from nlsq.program.padding import pad_chunk
from nlsq.program.sources import ArrayData, IterableData, check_chunk
from nlsq.program.spec import LargeSpec, Layout
from nlsq.transfer import device_values, device_words, host_values, host_words

logger = logging.getLogger("nlsq")


@dataclass
class StreamedFit:
    """What the host callbacks of one running fit need."""

    data: ArrayData | IterableData | None
    layout: Layout
    dtype: np.dtype
    callback: CallbackWrapper | None
    start: float = field(default_factory=time.perf_counter)
    error: BaseException | None = None
    iterator: Iterator | None = None
    consumed: int = 0


_lock = threading.Lock()


_tokens = itertools.count(1)


_fits: dict[int, StreamedFit] = {}


def _stream_chunk(context: StreamedFit, c: int) -> tuple:
    S = context.layout.chunk_size
    data = context.data
    if isinstance(data, ArrayData):
        start = c * S
        return data.chunk(c, start, min(start + S, data.m))
    if c == 0:
        context.iterator, context.consumed = iter(data.make()), 0
    item = next(context.iterator, None)
    if item is None:
        raise ChunkError(
            f"chunk {c}: the source yielded {c} chunks this pass, {len(data.sizes)} when "
            "first read."
        )
    x, y, weights = IterableData.unpack(c, item)
    if y.shape[:1] != (data.sizes[c],):
        raise ChunkError(
            f"chunk {c}: {y.shape[0] if y.ndim else 0} points this pass, "
            f"{data.sizes[c]} when first read."
        )
    check_chunk(c, context.consumed, x, y, weights, data.lead)
    context.consumed += y.shape[0]
    return x, y, weights


def _load_on_host(token_words, c_words, *, dtype: np.dtype, has_sigma: bool):
    token = int(host_values(token_words, np.int64))
    c = int(host_values(c_words, np.int64))
    context = _fits[token]
    S = context.layout.chunk_size
    lead = context.data.lead
    try:
        if context.error is not None:
            raise context.error
        xc, yc, wc = pad_chunk(*_stream_chunk(context, c), S, dtype, has_sigma)
    except BaseException as error:  # noqa: BLE001 - re-raised after the fit
        if context.error is None:
            context.error = error
        # Non-finite data stop the fit at once (the first evaluation) or shrink the
        # step; the progress hook then stops it.
        xc = np.full(lead + (S,), np.nan, dtype)
        yc = np.full(S, np.nan, dtype)
        wc = np.ones(S, dtype)
    out = (xc, yc) + ((wc,) if has_sigma else ())
    return tuple(host_words(a) for a in out)


def report_progress(token: int, x, fun, cost, nit, nfev) -> bool:
    """After each outer iteration: log cost and elapsed time, run the user's callback."""
    context = _fits.get(token)
    if context is None:
        return True
    elapsed = time.perf_counter() - context.start
    logger.info(
        "large fit: iteration %d, cost %.6e, nfev %d, elapsed %.2f s",
        int(nit),
        float(cost),
        int(nfev),
        elapsed,
    )
    stop = context.error is not None
    if context.callback is not None:
        stop = context.callback(x, fun, cost, nit, nfev) or stop
    return stop


def chunk_loader(token: jax.Array, spec: LargeSpec) -> Callable[[jax.Array], tuple]:
    dtype = np.dtype(spec.dtype)
    S = spec.layout.chunk_size
    shapes = [spec.lead + (S,), (S,)] + ([(S,)] if spec.has_sigma else [])
    words = [
        jax.ShapeDtypeStruct(shape + (max(1, dtype.itemsize // 4),), np.uint32) for shape in shapes
    ]
    host = functools.partial(_load_on_host, dtype=dtype, has_sigma=spec.has_sigma)

    def load(c: jax.Array) -> tuple:
        out = io_callback(
            host,
            tuple(words),
            device_words(token),
            device_words(jnp.asarray(c, jnp.int64)),
            ordered=True,
        )
        return tuple(device_values(w, dtype) for w in out)

    return load


@contextlib.contextmanager
def registered_fit(context: StreamedFit) -> Iterator[int]:
    """The token under which the host callbacks of one running fit find ``context``."""
    token = next(_tokens)
    with _lock:
        _fits[token] = context
    try:
        yield token
    finally:
        with _lock:
            _fits.pop(token, None)
