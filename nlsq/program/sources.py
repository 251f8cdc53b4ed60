"""Host data of a chunked fit: arrays (possibly memory-mapped) or a chunk source."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nlsq.errors import ChunkError
from nlsq.program.padding import pad_chunk
from nlsq.program.spec import Layout


def check_chunk(index: int, start: int, x: np.ndarray, y: np.ndarray, w: Any, lead: tuple) -> None:
    """Raise :class:`ChunkError`, naming the chunk, for a wrong shape or NaN/inf."""
    stop = start + y.shape[0]
    where = f"chunk {index} (points {start}:{stop})"
    if y.ndim != 1:
        raise ChunkError(f"{where}: ydata must be 1-D, got shape {y.shape}.")
    if x.shape != lead + (y.shape[0],):
        raise ChunkError(
            f"{where}: xdata has shape {x.shape}, expected {lead + (y.shape[0],)} "
            "(the data axis last)."
        )
    if w is not None and np.shape(w) not in ((), (1,), y.shape):
        raise ChunkError(f"{where}: sigma has shape {np.shape(w)}, expected {y.shape}.")
    if y.shape[0] == 0:
        raise ChunkError(f"{where}: the chunk is empty.")
    for name, values in (("xdata", x), ("ydata", y), ("sigma", w)):
        if values is not None and not np.isfinite(values).all():
            raise ChunkError(f"{where}: {name} contains NaN or inf.")


@dataclass
class ArrayData:
    """Data held as host arrays (possibly memory-mapped): ``x`` is ``(*lead, m)``.

    ``weights`` are ``1 / sigma`` (scalar or per point), or None.
    """

    x: np.ndarray
    y: np.ndarray
    weights: np.ndarray | None
    check_finite: bool

    @property
    def has_sigma(self) -> bool:
        return self.weights is not None

    @property
    def m(self) -> int:
        return self.y.shape[0]

    @property
    def lead(self) -> tuple:
        return self.x.shape[:-1]

    @property
    def nbytes(self) -> int:
        weights = 0 if self.weights is None else self.weights.nbytes
        return self.x.nbytes + self.y.nbytes + weights

    def chunk(self, index: int, start: int, stop: int) -> tuple:
        """``(x, y, weights)`` of points ``start:stop``, checked if asked."""
        x, y = self.x[..., start:stop], self.y[start:stop]
        weights = self.weights
        if weights is not None and weights.size > 1:
            weights = weights[start:stop]
        if self.check_finite:
            check_chunk(index, start, x, y, weights, self.lead)
        return x, y, weights

    def chunks(self, size: int) -> Iterator[tuple]:
        for index, start in enumerate(range(0, self.m, size)):
            yield self.chunk(index, start, min(start + size, self.m))


@dataclass
class IterableData:
    """Data yielded chunk by chunk by ``make()``: ``(x, y)`` or ``(x, y, sigma)``.

    One pass at setup checks every chunk and learns their number and sizes; each
    evaluation of the fit then calls ``make()`` again and streams over the data once.
    """

    make: Callable[[], Iterable]
    sizes: list[int] = field(default_factory=list)
    lead: tuple = ()
    has_sigma: bool = False

    @property
    def m(self) -> int:
        return sum(self.sizes)

    @staticmethod
    def unpack(index: int, item: Any) -> tuple:
        """``(x, y, weights)`` of one yielded chunk (weights ``1 / sigma`` or None)."""
        if not isinstance(item, tuple | list) or len(item) not in (2, 3):
            raise ChunkError(
                f"chunk {index}: expected a tuple (xdata, ydata) or (xdata, ydata, sigma), "
                f"got {type(item).__name__}."
            )
        x, y, *rest = item
        weights = 1.0 / np.asarray(rest[0], float) if rest else None
        return np.asarray(x, float), np.asarray(y, float), weights

    @classmethod
    def scan(cls, make: Callable[[], Iterable]) -> IterableData:
        data = cls(make)
        start = 0
        for index, item in enumerate(make()):
            x, y, weights = cls.unpack(index, item)
            if index == 0:
                data.lead, data.has_sigma = x.shape[:-1], weights is not None
            elif (weights is not None) != data.has_sigma:
                raise ChunkError(f"chunk {index}: sigma given for some chunks only.")
            check_chunk(index, start, x, y, weights, data.lead)
            data.sizes.append(y.shape[0])
            start += y.shape[0]
        if not data.sizes or start == 0:
            raise ValueError(
                "The chunk source yielded no data; the callable must return a new "
                "iterable of (xdata, ydata) chunks on every call (e.g. a generator function)."
            )
        return data


def resident_blocks(data: ArrayData, layout: Layout, dtype: np.dtype) -> tuple:
    """Host arrays of shape ``(B, C, ...)`` and the real points of each block."""
    B, C, S = layout.n_blocks, layout.n_chunks, layout.chunk_size
    xs = np.empty((B, C) + data.lead + (S,), dtype)
    ys = np.empty((B, C, S), dtype)
    ws = np.empty((B, C, S), dtype) if data.has_sigma else None
    last = np.asarray(data.x[..., -1:])
    for index in range(B * C):
        start = index * S
        if start < data.m:
            x, y, w = data.chunk(index, start, min(start + S, data.m))
        else:
            x, y, w = last, np.zeros(0), None
        xc, yc, wc = pad_chunk(x, y, w, S, dtype, data.has_sigma)
        b, c = divmod(index, C)
        xs[b, c], ys[b, c] = xc, yc
        if ws is not None:
            ws[b, c] = wc
    counts = np.clip(data.m - np.arange(B) * C * S, 0, C * S).astype(np.int64)
    return (xs, ys, ws), counts
