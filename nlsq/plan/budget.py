"""One memory budget, and the sizes that follow from it.

The budget is the setting ``large.memory_budget`` (``NLSQ_MEMORY_BUDGET``, the config
file, or an argument): above it ``curve_fit`` fits in chunks, from it a chunked fit
takes its chunk size and a batch its fits per compiled call.
"""

from __future__ import annotations

from typing import Any

from nlsq import config
from nlsq.program.padding import fits_bucket

#: Smallest and largest default chunk of a chunked fit (points).
MIN_CHUNK, MAX_CHUNK = 1 << 12, 1 << 20

#: Most fits in one chunk. On a 2-core CPU the time per fit is flat from 128 to 2048
#: fits per chunk and 20-35% higher at 4096-8192, where a chunk's working set leaves
#: the caches; smaller chunks also wait less for their slowest fit.
MAX_FITS_PER_CALL = 1024


#: Working-set size of one fit, in values of the working dtype, per data point and
#: Jacobian column (plus one): XLA's memory analysis of compiled batch programs gives
#: about 5 (solver state, factorisation, outputs); the rest is headroom for the host's
#: copies of the chunk.
_VALUES_PER_POINT_AND_COLUMN = 8


def memory_budget_of(argument: Any = None) -> int:
    """The memory budget in bytes: ``argument`` (an int or a size like ``"512MiB"``),
    else the setting ``large.memory_budget`` (``NLSQ_MEMORY_BUDGET``).

    Raises
    ------
    ValueError
        For a budget that is not a positive size.
    """
    return config.get("large.memory_budget", argument)


def in_memory_bytes(m: int, n: int, itemsize: int = 8) -> int:
    """Estimated working memory of the in-memory fit of ``m`` residuals, ``n`` parameters.

    The Jacobian, its loss-scaled copy and the QR workspace of ``[J | f]`` (each
    about ``m x (n + 1)``), and a few residual vectors.
    """
    return itemsize * m * (3 * (n + 1) + 4)


def default_chunk_size(m: int, n: int, itemsize: int, budget: int, n_blocks: int = 1) -> int:
    """Points per chunk: a chunk's working memory (residuals, a ``chunk x n``
    Jacobian and its scaled copy, temporaries) is kept to a 16th of the budget,
    between 4096 and 2**20 points, and never more than one block needs."""
    per_point = itemsize * (3 * n + 8)
    size = max(MIN_CHUNK, min(MAX_CHUNK, budget // (16 * per_point)))
    per_block = -(-m // n_blocks)
    return int(min(size, per_block))


def bytes_per_fit(size: int, n: int, itemsize: int, per_fit_inputs: int) -> int:
    """Estimated memory one fit of ``size`` points and ``n`` parameters takes in a chunk.

    ``per_fit_inputs`` counts the values of the fit's own inputs (data, weights).
    """
    working = _VALUES_PER_POINT_AND_COLUMN * size * (n + 2) + 8 * (n + 2) ** 2
    return itemsize * (working + 2 * per_fit_inputs)


def chunk_length(
    n_fits: int, per_fit_bytes: int, fits_per_chunk: int | None, budget: Any = None
) -> int:
    """Fits per compiled call: ``fits_per_chunk`` if given, else what the budget allows
    (at most :data:`MAX_FITS_PER_CALL`), rounded up to a bucket for small batches."""
    if fits_per_chunk is not None:
        if int(fits_per_chunk) < 1:
            raise ValueError("`fits_per_chunk` must be a positive integer.")
        return int(fits_per_chunk)
    budget = memory_budget_of(budget)
    fits = max(1, min(MAX_FITS_PER_CALL, budget // max(per_fit_bytes, 1)))
    return fits if n_fits > fits else fits_bucket(n_fits)


def checked_chunk_size(chunk_size: Any) -> int | None:
    """``chunk_size`` (points per chunk of a chunked fit) as a positive int, or None.

    Raises
    ------
    ValueError
        For anything else (0, negative, a bool).
    """
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or int(chunk_size) != chunk_size or chunk_size <= 0:
        raise ValueError("`chunk_size` must be a positive integer.")
    return int(chunk_size)
