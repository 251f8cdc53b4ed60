"""Small robust statistics for timings: medians, spreads, paired ratios and their noise."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: Smallest relative noise ever assumed: a handful of samples can agree by chance.
NOISE_FLOOR = 0.005


def median(values: Sequence[float]) -> float:
    """Median of ``values`` (NaN when empty)."""
    return float(np.median(values)) if len(values) else math.nan


def relative_spread(values: Sequence[float]) -> float:
    """Interquartile range over the median: how noisy one series of repeats is."""
    if len(values) < 2:
        return math.nan
    q25, q50, q75 = np.percentile(values, [25, 50, 75])
    return float((q75 - q25) / q50) if q50 else math.nan


def _log_sigma(logs: np.ndarray) -> float:
    """Robust standard deviation of ``logs`` (sample std for tiny samples)."""
    if logs.size < 2:
        return math.nan
    if logs.size < 6:  # the MAD of 3..5 values is too often 0 by coincidence
        return float(np.std(logs, ddof=1))
    return float(1.4826 * np.median(np.abs(logs - np.median(logs))))


def paired_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> tuple[float, float]:
    """Median of the per-pair ratios, and its relative standard error.

    Each pair was measured back to back, so a change of machine load between pairs
    cancels in the ratio. The error of a median is about 1.25 sigma / sqrt(n).

    Returns
    -------
    ratio : float
        ``median(numerator[i] / denominator[i])``.
    noise : float
        Relative standard error of ``ratio`` (log scale), at least :data:`NOISE_FLOOR`;
        NaN with fewer than two pairs.
    """
    num, den = np.asarray(numerator, dtype=float), np.asarray(denominator, dtype=float)
    if num.shape != den.shape or num.size == 0:
        raise ValueError("paired_ratio needs two non-empty series of the same length")
    # A clock tick below the timer's resolution must not become log(0).
    logs = np.log(np.maximum(num, 1e-9) / np.maximum(den, 1e-9))
    ratio = float(np.exp(np.median(logs)))
    sigma = _log_sigma(logs)
    if math.isnan(sigma):
        return ratio, math.nan
    return ratio, max(NOISE_FLOOR, 1.2533 * sigma / math.sqrt(logs.size))


def round_sig(value: float, digits: int = 4) -> float:
    """``value`` rounded to ``digits`` significant digits (keeps stored samples short)."""
    return float(f"{value:.{digits}g}")
