"""A batch's data on one common length: the accepted layouts of ``xdata``, ``ydata``,
``sigma`` and ``mask`` brought to one, real points first, and scipy's weights."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from nlsq.program.padding import pad_covariances, pad_rows

#: ``curve_fit``'s message for NaN or inf in the data (NumPy's ``asarray_chkfinite``).
NONFINITE_MESSAGE = "array must not contain infs or NaNs"

#: Points per block of fits in the host-side checks: their per-point temporaries stay
#: this small however large (or memory-mapped) the batch is.
BLOCK_POINTS = 1 << 18


@dataclass
class BatchData:
    """Every fit's data on a common length ``M`` (NumPy, host side).

    ``valid[i, j]`` marks the real points of fit ``i``; after :func:`compact` they
    come first. ``xdata`` and ``sigma`` are shared (no batch axis) unless their
    ``*_per_fit`` flag is set.
    """

    xdata: np.ndarray
    x_per_fit: bool
    ydata: np.ndarray
    valid: np.ndarray
    sigma: np.ndarray | None
    sigma_per_fit: bool
    sigma_kind: str

    @property
    def size(self) -> int:
        return self.ydata.shape[1]


def is_sequence_of_arrays(value: Any) -> bool:
    return isinstance(value, list | tuple) and all(
        isinstance(item, list | tuple | np.ndarray | jax.Array) for item in value
    )


def _ragged_data(xdata: Any, ydata: Sequence, sigma: Any) -> tuple[Any, np.ndarray, Any, Any]:
    """A list of per-fit arrays as padded 2-D arrays and the mask of real points."""
    rows = [np.asarray(row, dtype=float) for row in ydata]
    if any(row.ndim != 1 for row in rows):
        raise ValueError("Each fit's `ydata` must be 1-D.")
    lengths = np.array([row.size for row in rows])
    length = max(int(lengths.max(initial=0)), 1)
    valid = np.arange(length) < lengths[:, None]
    if is_sequence_of_arrays(xdata):
        if len(xdata) != len(rows):
            raise ValueError("`xdata` and `ydata` must hold the same number of fits.")
        xrows = [np.asarray(x, dtype=float) for x in xdata]
        if any(x.shape[-1:] != (m,) for x, m in zip(xrows, lengths, strict=True)):
            raise ValueError("Each fit's `xdata` must end in an axis as long as its `ydata`.")
        if len({x.shape[:-1] for x in xrows}) > 1:
            raise ValueError("Every fit's `xdata` must have the same number of predictors.")
        xdata = pad_rows(xrows, length, "edge")
    if is_sequence_of_arrays(sigma):
        srows = [np.asarray(s) for s in sigma]
        if len(srows) != len(rows):
            raise ValueError("`sigma` and `ydata` must hold the same number of fits.")
        if all(s.ndim == 2 for s in srows):
            sigma = pad_covariances(srows, length)
        elif all(s.ndim == 1 for s in srows):
            sigma = pad_rows(srows, length, "one")
        else:
            raise ValueError("`sigma` has incorrect shape.")
    return xdata, pad_rows(rows, length, "zero"), sigma, valid


def _classify_sigma(sigma: Any, n_fits: int, size: int) -> tuple[str, np.ndarray | None, bool]:
    """``(kind, sigma, per_fit)`` for scipy's kinds 'none', 'diagonal', 'covariance'.

    An array shaped like ``ydata`` holds per-fit standard deviations (this wins when
    ``B == M``); ``(M,)`` or a scalar is shared; ``(M, M)`` is a shared covariance and
    ``(B, M, M)`` one covariance per fit.
    """
    if sigma is None:
        return "none", None, False
    # sigma keeps its dtype, as in scipy (float32 sigma gives float32 weights).
    sigma = np.asarray(sigma)
    if sigma.size == 1 or sigma.shape == (size,):
        return "diagonal", sigma, False
    if sigma.shape == (n_fits, size):
        return "diagonal", sigma, True
    if sigma.shape == (size, size):
        return "covariance", sigma, False
    if sigma.shape == (n_fits, size, size):
        return "covariance", sigma, True
    raise ValueError("`sigma` has incorrect shape.")


def normalize_batch_data(xdata: Any, ydata: Any, sigma: Any, mask: Any) -> BatchData:
    """Bring the accepted layouts of ``xdata``, ``ydata``, ``sigma`` and ``mask`` to one."""
    if is_sequence_of_arrays(ydata) and len({np.shape(row) for row in ydata}) > 1:
        if mask is not None:
            raise ValueError("Pass either a list of per-fit arrays or a `mask`, not both.")
        xdata, ydata, sigma, valid = _ragged_data(xdata, ydata, sigma)
    else:
        ydata = np.asarray(ydata, dtype=float)
        if ydata.ndim != 2:
            raise ValueError(
                "`ydata` must be 2-D, one row per fit (B, M), or a list of 1-D arrays; "
                "for a single fit use curve_fit."
            )
        # A read-only view: without a mask, a large batch gets no (B, M) array of flags.
        valid = np.broadcast_to(True, ydata.shape)
        if mask is not None:
            mask = np.asarray(mask)
            if mask.shape != ydata.shape:
                raise ValueError("`mask` must have the shape of `ydata`.")
            valid = mask.astype(bool)
        if is_sequence_of_arrays(xdata) and len(xdata) == ydata.shape[0]:
            xdata = np.stack([np.asarray(x, dtype=float) for x in xdata])
    n_fits, size = ydata.shape
    if isinstance(xdata, list | tuple | np.ndarray | jax.Array):
        xdata = np.asarray(xdata, dtype=float)
    else:
        raise TypeError("curve_fit_batch needs `xdata` as an array (shared or one per fit).")
    x_per_fit = xdata.ndim >= 2 and xdata.shape[0] == n_fits
    if xdata.shape[-1:] != (size,):
        raise ValueError(
            f"`xdata` must end in an axis of the data length {size}; got shape {xdata.shape}."
        )
    kind, sigma, sigma_per_fit = _classify_sigma(sigma, n_fits, size)
    return BatchData(xdata, x_per_fit, ydata, valid, sigma, sigma_per_fit, kind)


def fit_blocks(n_fits: int, length: int) -> Iterator[slice]:
    """Consecutive slices of fits holding about :data:`BLOCK_POINTS` points each."""
    step = max(1, BLOCK_POINTS // max(length, 1))
    for start in range(0, n_fits, step):
        yield slice(start, start + step)


def _any_coordinate(values: np.ndarray, leading: int) -> np.ndarray:
    """``values`` of shape ``(<leading axes>, ..., M)`` reduced over its coordinates."""
    shape = values.shape[:leading] + (-1, values.shape[-1])
    return values.reshape(shape).any(axis=leading)


def flagged_points(
    data: BatchData, test: Callable[[np.ndarray], np.ndarray]
) -> Iterator[tuple[slice, np.ndarray]]:
    """Where ``test`` holds at a real point (in ``ydata`` or any coordinate of
    ``xdata``), one block of fits at a time: pairs of the block and its (rows, M) flags.
    """
    n_fits, length = data.ydata.shape
    shared_x = None if data.x_per_fit else _any_coordinate(test(data.xdata), 0)
    for rows in fit_blocks(n_fits, length):
        flags = test(data.ydata[rows])
        flags |= _any_coordinate(test(data.xdata[rows]), 1) if data.x_per_fit else shared_x
        flags &= data.valid[rows]
        yield rows, flags


def compact(data: BatchData) -> None:
    """Move each fit's real points to the front, in order (a stable gather).

    Needed when a mask (or ``nan_policy='omit'``) drops points in the middle; shared
    ``xdata`` and ``sigma`` then become per-fit arrays.
    """
    order = np.argsort(~data.valid, axis=1, kind="stable")
    n_fits = data.ydata.shape[0]
    rows = np.arange(n_fits)[:, None]
    data.ydata = data.ydata[rows, order]
    x = data.xdata if data.x_per_fit else np.broadcast_to(data.xdata, (n_fits,) + data.xdata.shape)
    data.xdata = np.take_along_axis(x, order.reshape((n_fits,) + (1,) * (x.ndim - 2) + (-1,)), -1)
    data.x_per_fit = True
    if data.sigma is not None and data.sigma.size > 1:
        sigma = data.sigma
        if not data.sigma_per_fit:
            sigma = np.broadcast_to(sigma, (n_fits,) + sigma.shape)
        if data.sigma_kind == "covariance":
            sigma = sigma[rows[:, :, None], order[:, :, None], order[:, None, :]]
        else:
            sigma = sigma[rows, order]
        data.sigma, data.sigma_per_fit = sigma, True
    data.valid = data.valid[rows, order]


def needs_compaction(valid: np.ndarray) -> bool:
    """Whether some fit's real points are not a prefix of its row."""
    position = np.arange(valid.shape[1])
    for rows in fit_blocks(*valid.shape):
        block = valid[rows]
        if (block != (position < block.sum(axis=1)[:, None])).any():
            return True
    return False


def batch_weights(data: BatchData, counts: np.ndarray, errors: dict[int, str]) -> np.ndarray | None:
    """scipy's weighting transform: ``1 / sigma``, or the Cholesky factor of each fit's
    covariance (of its real points; an identity block on the padding).

    A covariance that is not positive definite is that fit's error.
    """
    if data.sigma_kind == "none":
        return None
    sigma = data.sigma
    if data.sigma_kind == "diagonal":
        return 1.0 / sigma
    from scipy.linalg import LinAlgError, cholesky

    if not data.sigma_per_fit:
        try:
            return cholesky(sigma, lower=True)
        except LinAlgError:
            for index in range(data.ydata.shape[0]):
                errors.setdefault(index, "`sigma` must be positive definite.")
        except ValueError:
            for index in range(data.ydata.shape[0]):
                errors.setdefault(index, NONFINITE_MESSAGE)
        return np.broadcast_to(np.eye(sigma.shape[-1], dtype=sigma.dtype), sigma.shape).copy()
    factors = np.broadcast_to(np.eye(data.size, dtype=sigma.dtype), sigma.shape).copy()
    for index in range(sigma.shape[0]):
        if index in errors:
            continue
        m = int(counts[index])
        try:
            factors[index, :m, :m] = cholesky(sigma[index, :m, :m], lower=True)
        except LinAlgError:
            errors[index] = "`sigma` must be positive definite."
        except ValueError:
            errors[index] = NONFINITE_MESSAGE
    return factors
