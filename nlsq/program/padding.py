"""Padding, one rule for every kind of fit: the model stays finite, the solver masks it.

Data are padded to a compiled length (a size bucket, a chunk, the common length of a
batch): ``xdata`` repeats the last real point, ``ydata`` is 0 and a weight 1 (an
identity block for a covariance factor). The solver zeroes the padded residuals, so
they add nothing to the cost, the gradient or ``J^T J``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from nlsq import config
from nlsq.pointwise import acts_pointwise_once


def pad_to_bucket(
    xdata: np.ndarray, ydata: np.ndarray, kind: str, transform: np.ndarray | None, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Pad the data to ``size`` points; the solver zeroes the padded residuals.

    ``xdata`` repeats its last point so the model stays finite there; padded weights
    are 1 (an identity block for a covariance factor).
    """
    m = ydata.size
    padded_x = np.empty(xdata.shape[:-1] + (size,), xdata.dtype)
    padded_x[..., :m] = xdata
    padded_x[..., m:] = xdata[..., -1:]
    padded_y = np.zeros(size, ydata.dtype)
    padded_y[:m] = ydata
    if kind == "diagonal" and transform.size > 1:
        padded_t = np.ones(size, transform.dtype)
        padded_t[:m] = transform
        transform = padded_t
    elif kind == "covariance":
        padded_t = np.eye(size, dtype=transform.dtype)
        padded_t[:m, :m] = transform
        transform = padded_t
    return padded_x, padded_y, transform


def bucketed_data(
    f: Callable,
    model_id: Any,
    xdata: Any,
    ydata: np.ndarray,
    kind: str,
    transform: np.ndarray | None,
    x0: np.ndarray,
    fixed_length: int | None = None,
) -> tuple[tuple, int] | None:
    """A pointwise model's data in its size bucket: ``((xdata, ydata, transform), m)``
    with ``m`` real residuals, or None when the data run as they are.

    Only a model that acts point by point along a last data axis of ``xdata`` (an
    array) may be padded, and only when size buckets are on. ``fixed_length`` (the
    published nlsq's ``flength``) replaces the bucket for data up to that length. A
    length equal to its bucket still runs the bucket's (masked) program.
    """
    m = ydata.size
    if (
        not config.get("cache_config.size_buckets")
        or not isinstance(xdata, np.ndarray)
        or xdata.ndim < 1
        or xdata.shape[-1] != m
        or not acts_pointwise_once(f, model_id, xdata, x0)
    ):
        return None
    size = bucket_size(m) if fixed_length is None or fixed_length < m else fixed_length
    if size != m:
        return pad_to_bucket(xdata, ydata, kind, transform, size), m
    return (xdata, ydata, transform), m


def pad_chunk(
    x: np.ndarray, y: np.ndarray, weights: Any, size: int, dtype: np.dtype, has_weights: bool
) -> tuple:
    """A chunk padded to ``size`` points: x repeats its last point (the model stays
    finite), y is 0, the weight 1; the solver masks the padding anyway."""
    k = y.shape[0]
    xc = np.empty(x.shape[:-1] + (size,), dtype)
    xc[..., :k] = x[..., :k]
    xc[..., k:] = x[..., -1:]
    yc = np.zeros(size, dtype)
    yc[:k] = y
    if not has_weights:
        return xc, yc, None
    wc = np.ones(size, dtype)
    wc[:k] = 1.0 if weights is None else weights
    return xc, yc, wc


def pad_rows(rows: Sequence[np.ndarray], length: int, fill: str) -> np.ndarray:
    """Stack 1-D (or ``(..., m_i)``) arrays along a new axis 0, padded on the last axis.

    ``fill`` is ``'zero'``, ``'one'`` or ``'edge'`` (repeat the last value).
    """
    first = rows[0]
    out = np.zeros((len(rows),) + first.shape[:-1] + (length,), np.result_type(*rows))
    if fill == "one":
        out[...] = 1
    for i, row in enumerate(rows):
        m = row.shape[-1]
        out[i, ..., :m] = row
        if fill == "edge" and 0 < m < length:
            out[i, ..., m:] = row[..., -1:]
    return out


def pad_covariances(rows: Sequence[np.ndarray], length: int) -> np.ndarray:
    out = np.zeros((len(rows), length, length), np.result_type(*rows))
    out[:] = np.eye(length)
    for i, row in enumerate(rows):
        m = row.shape[-1]
        out[i, :m, :m] = row
    return out


def pad_batch_tail(data: Any, counts: np.ndarray, length: int) -> None:
    """Fill every fit's padding (past its count) so the model stays finite there.

    ``xdata`` repeats the fit's last real point, ``ydata`` is 0 and ``sigma`` 1 (an
    identity block for a covariance); the solver zeroes those residuals.
    """
    n_fits, size = data.ydata.shape
    extra = length - size
    pad = np.arange(length) >= counts[:, None]
    ydata = np.zeros((n_fits, length))
    ydata[:, :size] = data.ydata
    data.ydata = np.where(pad, 0.0, ydata)

    x = data.xdata if data.x_per_fit else np.broadcast_to(data.xdata, (n_fits,) + data.xdata.shape)
    x = np.concatenate([x, np.repeat(x[..., -1:], extra, axis=-1)], axis=-1) if extra else x
    last = np.take_along_axis(
        x, np.maximum(counts - 1, 0).reshape((n_fits,) + (1,) * (x.ndim - 1)), -1
    )
    pad_x = pad.reshape((n_fits,) + (1,) * (x.ndim - 2) + (length,))
    data.xdata, data.x_per_fit = np.where(pad_x, last, x), True

    if data.sigma is not None and data.sigma.size > 1:
        sigma = data.sigma
        if not data.sigma_per_fit:
            sigma = np.broadcast_to(sigma, (n_fits,) + sigma.shape)
        if data.sigma_kind == "covariance":
            full = np.zeros((n_fits, length, length), sigma.dtype)
            full[:, :size, :size] = sigma
            keep = ~pad[:, :, None] & ~pad[:, None, :]
            data.sigma = np.where(keep, full, np.eye(length, dtype=sigma.dtype))
        else:
            full = np.ones((n_fits, length), sigma.dtype)
            full[:, :size] = sigma
            data.sigma = np.where(pad, np.ones((), sigma.dtype), full)
        data.sigma_per_fit = True
    data.valid = ~pad


#: Smallest padded length; shorter data are padded up to it.
MIN_BUCKET = 16


#: Above this length buckets are finer than powers of two (8 per octave).
FINE_BUCKETS_FROM = 1 << 13


def bucket_size(m: int) -> int:
    """Padded length for ``m`` data points.

    Up to 8192 points: the next power of two (at least 16), so every length in
    ``(2**(k-1), 2**k]`` shares one compiled program and padding at most doubles a
    small fit's work (25% on average). Beyond, where a fit takes a millisecond or more
    and doubling it would cost more than the compiles that finer buckets add, the next
    multiple of ``2**(k-3)``: eight buckets per octave, at most 12.5% padding.
    """
    if m <= FINE_BUCKETS_FROM:
        return max(MIN_BUCKET, 1 << (m - 1).bit_length())
    step = 1 << ((m - 1).bit_length() - 4)
    return -(-m // step) * step


def padded_length(size: int) -> int:
    """Common length of ragged data: the next multiple of ``2**(k-3)`` (k bits), at
    least 16, so at most 12.5% padding and few distinct compiled shapes."""
    if size <= 16:
        return 16
    step = 1 << ((size - 1).bit_length() - 3)
    return -(-size // step) * step


def fits_bucket(count: int) -> int:
    """Fits per compiled call for ``count`` fits, so that batch sizes share programs:
    the next power of two up to 8, then at most 1/16 more."""
    if count <= 8:
        return 1 << max(count - 1, 0).bit_length()
    step = 1 << ((count - 1).bit_length() - 4)
    return -(-count // step) * step
