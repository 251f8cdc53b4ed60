"""The benchmark catalogue: every problem the suite measures, one entry each.

A :class:`Model` is written once against an array module ``xp`` (``jax.numpy`` for nlsq,
NumPy for scipy), so both libraries fit the same function. A :class:`Problem` is a model
at one data size with its variant options (bounds, robust loss, outliers, warm disk
cache); adding a problem to the suite is adding one ``Problem(...)`` to :data:`CATALOGUE`.

This module imports only NumPy and the standard library: the cold-start worker imports it
after the timed imports, and scipy's cold start must not pay for JAX.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

#: Sizes of the size sweep (n = 1e2 .. 1e6).
SWEEP_SIZES = (100, 1_000, 10_000, 100_000, 1_000_000)

#: Problems of the quick gate (CI): a few minutes on two cores.
QUICK = "quick"
#: Problems of the size sweep (plotted as time against n).
SWEEP = "sweep"

Bounds = tuple[tuple[float, ...], tuple[float, ...]]


# --- models --------------------------------------------------------------------------


def _exponential(xp: ModuleType) -> Callable[..., Any]:
    def exponential(x, a, b, c):
        return a * xp.exp(-b * x) + c

    return exponential


def _gaussian(xp: ModuleType) -> Callable[..., Any]:
    def gaussian(x, a, mu, sigma):
        return a * xp.exp(-(((x - mu) / sigma) ** 2) / 2)

    return gaussian


def _poly4(xp: ModuleType) -> Callable[..., Any]:
    def poly4(x, c0, c1, c2, c3, c4):
        return c0 + x * (c1 + x * (c2 + x * (c3 + x * c4)))

    return poly4


def _sinusoid(xp: ModuleType) -> Callable[..., Any]:
    def sinusoid(x, a, w, phi, c):
        return a * xp.sin(w * x + phi) + c

    return sinusoid


def _multi_gaussian(xp: ModuleType) -> Callable[..., Any]:
    def multi_gaussian(x, *p):
        # Parameters come as (amplitude, centre, width) triples, one per peak.
        params = xp.stack([xp.asarray(v) for v in p])
        a, mu, s = params[0::3], params[1::3], params[2::3]
        z = (x[None, :] - mu[:, None]) / s[:, None]
        return xp.sum(a[:, None] * xp.exp(-(z**2) / 2), axis=0)

    return multi_gaussian


def _peaks(count: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """True parameters and a perturbed start for ``count`` well separated peaks."""
    true: list[float] = []
    start: list[float] = []
    for k in range(count):
        amplitude, centre, width = 1.0 + 0.2 * (k % 5), 5.0 + 10.0 * k, 1.5 + 0.1 * (k % 4)
        true += [amplitude, centre, width]
        start += [0.9 * amplitude, centre + 0.3, 1.1 * width]
    return tuple(true), tuple(start)


@dataclass(frozen=True)
class Model:
    """A fit function with its true parameters, starting point and data range.

    Parameters
    ----------
    name : str
        Family name, used in problem names and plots.
    factory : callable
        ``factory(xp)`` returns ``f(x, *params)`` written with array module ``xp``.
    true, p0 : tuple of float
        Parameters that generate the data, and the starting point of every fit.
    x_range : (float, float)
        The data are ``n`` equally spaced points in this interval.
    noise : float
        Standard deviation of the Gaussian noise added to the data.
    rtol, atol : float
        A fit is accurate when ``|p - true| <= atol + rtol * |true|`` for every parameter.
    """

    name: str
    factory: Callable[[ModuleType], Callable[..., Any]]
    true: tuple[float, ...]
    p0: tuple[float, ...]
    x_range: tuple[float, float]
    noise: float = 0.05
    rtol: float = 0.05
    atol: float = 0.05

    def function(self, xp: ModuleType) -> Callable[..., Any]:
        """The model written with array module ``xp``."""
        return self.factory(xp)


EXPONENTIAL = Model("exponential", _exponential, (2.5, 1.3, 0.5), (2.0, 1.0, 0.3), (0.0, 5.0))
GAUSSIAN = Model("gaussian", _gaussian, (3.0, 0.5, 1.2), (2.5, 0.3, 1.0), (-5.0, 5.0))
POLY4 = Model("poly4", _poly4, (1.0, -2.0, 0.5, 0.3, -0.1), (0.8, -1.5, 0.4, 0.2, 0.0), (-2.0, 2.0))
# The frequency starts close to the truth: a sinusoid fit has local minima at other ones.
SINUSOID = Model("sinusoid", _sinusoid, (1.5, 2.0, 0.3, 0.5), (1.2, 1.98, 0.2, 0.4), (0.0, 10.0))
MULTI_GAUSSIAN = Model("multi_gaussian", _multi_gaussian, *_peaks(10), (0.0, 100.0))

MODELS = {m.name: m for m in (EXPONENTIAL, GAUSSIAN, POLY4, SINUSOID, MULTI_GAUSSIAN)}


# --- problems ------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One benchmark case: a model at one data size, with its variant options.

    Parameters
    ----------
    name : str
        Unique name, e.g. ``'gaussian-1e4'`` or ``'sinusoid-1e3-bounded'``.
    model : Model
        The fit function and its parameters.
    n : int
        Number of data points.
    bounds : ((float, ...), (float, ...)) or None
        Box bounds passed to both libraries (``None``: unbounded).
    loss : str
        Robust loss (``'linear'``: ordinary least squares).
    f_scale : float
        Soft margin of the robust loss.
    outliers : float
        Fraction of points shifted by gross errors (for the robust-loss variants).
    warm_disk_cache : bool
        Cold runs share a persistent compilation cache filled by one untimed run, to
        measure a fresh process whose compile is already on disk. Otherwise every cold
        run starts with an empty cache directory.
    batch : int
        Fits per call (0: one fit). nlsq fits the ``(batch, n)`` data with one
        ``nlsq.curve_fit_batch`` call, scipy with a loop of ``curve_fit`` calls; a time
        is that of the whole batch.
    chunk_size : int or None
        nlsq fits with ``nlsq.curve_fit_large`` in chunks of this many points (the
        large-data path); scipy with its ordinary ``curve_fit``.
    tags : frozenset of str
        ``'quick'`` (the CI gate), ``'sweep'`` (the size sweep).
    """

    name: str
    model: Model
    n: int
    bounds: Bounds | None = None
    loss: str = "linear"
    f_scale: float = 1.0
    outliers: float = 0.0
    warm_disk_cache: bool = False
    batch: int = 0
    chunk_size: int | None = None
    tags: frozenset[str] = field(default_factory=frozenset)

    @property
    def family(self) -> str:
        return self.model.name

    @property
    def n_params(self) -> int:
        return len(self.model.true)

    @property
    def fits(self) -> int:
        """Fits per call: the batch size, or 1."""
        return max(self.batch, 1)

    @property
    def variant(self) -> str:
        """Short label of what differs from a plain unbounded least-squares fit."""
        parts = []
        if self.batch:
            parts.append(f"batch of {self.batch}")
        if self.chunk_size:
            parts.append(f"chunked ({self.chunk_size} points)")
        if self.bounds is not None:
            parts.append("bounded")
        if self.loss != "linear":
            parts.append(self.loss)
        if self.warm_disk_cache:
            parts.append("warm disk cache")
        return ", ".join(parts) or "plain"

    def fit_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``curve_fit`` shared by nlsq and scipy."""
        kwargs: dict[str, Any] = {"p0": self.model.p0}
        if self.bounds is not None:
            kwargs["bounds"] = self.bounds
        if self.loss != "linear":
            kwargs["loss"] = self.loss
            kwargs["f_scale"] = self.f_scale
        return kwargs

    def scipy_kwargs(self) -> dict[str, Any]:
        """scipy's keywords: its default method ('lm') refuses a robust loss, so use 'trf'."""
        kwargs = self.fit_kwargs()
        if self.loss != "linear":
            kwargs["method"] = "trf"
        return kwargs

    def describe(self) -> dict[str, Any]:
        """The problem as plain JSON-able values (stored with every result)."""
        return {
            "family": self.family,
            "n": self.n,
            "n_params": self.n_params,
            "variant": self.variant,
            "bounded": self.bounds is not None,
            "loss": self.loss,
            "outliers": self.outliers,
            "warm_disk_cache": self.warm_disk_cache,
            "batch": self.batch,
            "chunk_size": self.chunk_size,
            "tags": sorted(self.tags),
        }


def size_label(n: int) -> str:
    """1000 -> '1e3'; sizes that are not powers of ten are written in full."""
    exponent = len(str(n)) - 1
    return f"1e{exponent}" if n == 10**exponent else str(n)


def _sweep(model: Model, sizes: Iterable[int], quick: Iterable[int] = ()) -> list[Problem]:
    quick = set(quick)
    return [
        Problem(
            f"{model.name}-{size_label(n)}",
            model,
            n,
            tags=frozenset({SWEEP, QUICK} if n in quick else {SWEEP}),
        )
        for n in sizes
    ]


_Q = frozenset({QUICK})

CATALOGUE: tuple[Problem, ...] = (
    # Size sweep: the four standard models at n = 1e2 .. 1e6.
    *_sweep(EXPONENTIAL, SWEEP_SIZES, quick=[1_000]),
    *_sweep(GAUSSIAN, SWEEP_SIZES, quick=[10_000]),
    *_sweep(POLY4, SWEEP_SIZES),
    *_sweep(SINUSOID, SWEEP_SIZES),
    # Bounded variants (bounds contain the truth and the starting point).
    Problem("exponential-1e3-bounded", EXPONENTIAL, 1_000, bounds=((0, 0, -1), (10, 10, 1))),
    Problem("exponential-1e5-bounded", EXPONENTIAL, 100_000, bounds=((0, 0, -1), (10, 10, 1))),
    Problem("gaussian-1e3-bounded", GAUSSIAN, 1_000, bounds=((0, -2, 0.1), (10, 2, 5))),
    Problem(
        "sinusoid-1e3-bounded", SINUSOID, 1_000, bounds=((0, 1.5, -1, -1), (5, 2.5, 1, 2)), tags=_Q
    ),
    # Robust losses on data with 5% gross outliers.
    Problem(
        "exponential-1e3-soft_l1", EXPONENTIAL, 1_000, loss="soft_l1", f_scale=0.1, outliers=0.05
    ),
    Problem("poly4-1e3-huber", POLY4, 1_000, loss="huber", f_scale=0.1, outliers=0.05, tags=_Q),
    Problem("sinusoid-1e3-cauchy", SINUSOID, 1_000, loss="cauchy", f_scale=0.1, outliers=0.05),
    Problem("gaussian-1e4-soft_l1", GAUSSIAN, 10_000, loss="soft_l1", f_scale=0.1, outliers=0.05),
    # Parameter-heavy: ten Gaussian peaks, 30 parameters.
    Problem("multi_gaussian-1e3", MULTI_GAUSSIAN, 1_000, tags=_Q),
    Problem("multi_gaussian-1e4", MULTI_GAUSSIAN, 10_000),
    Problem(
        "multi_gaussian-1e3-bounded",
        MULTI_GAUSSIAN,
        1_000,
        bounds=((0.0, 0.0, 0.5) * 10, (10.0, 100.0, 5.0) * 10),
    ),
    # A fresh process whose compiled program is already in the persistent cache.
    Problem("exponential-1e3-warm-disk", EXPONENTIAL, 1_000, warm_disk_cache=True),
    # Batches of small fits: Gaussian peaks of 64 points, many per call.
    # Not in the quick gate: under other processes' load their hot CPU-time ratio moved
    # by 65% between runs (0.063 to 0.104), beyond the gate's load allowance.
    Problem("gaussian-64-batch1000", GAUSSIAN, 64, batch=1_000),
    Problem(
        "gaussian-64-batch200-bounded",
        GAUSSIAN,
        64,
        bounds=((0, -2, 0.1), (10, 2, 5)),
        batch=200,  # scipy's bounded 'trf' takes ~5 ms a fit: 1000 would take minutes
    ),
    # Large data through the chunked path (16 chunks); compare with exponential-1e6.
    Problem("exponential-1e6-chunked", EXPONENTIAL, 1_000_000, chunk_size=1 << 16),
)

PROBLEMS: dict[str, Problem] = {p.name: p for p in CATALOGUE}
if len(PROBLEMS) != len(CATALOGUE):  # pragma: no cover - a catalogue editing mistake
    raise RuntimeError("benchmark problem names must be unique")


def select(spec: str) -> list[Problem]:
    """Problems named by ``spec``: ``'quick'``, ``'all'``, a tag, or comma-separated names.

    Raises
    ------
    ValueError
        If a name is neither a problem nor a tag.
    """
    spec = spec.strip()
    if spec == "all":
        return list(CATALOGUE)
    chosen: list[Problem] = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        if item in PROBLEMS:
            matches = [PROBLEMS[item]]
        else:
            matches = [p for p in CATALOGUE if item in p.tags or item == p.family]
        if not matches:
            raise ValueError(
                f"unknown benchmark problem or tag {item!r}; choose 'all', 'quick', 'sweep', "
                f"a family ({', '.join(MODELS)}) or names from: {', '.join(PROBLEMS)}"
            )
        chosen += [p for p in matches if p not in chosen]
    return chosen


# --- data and accuracy ---------------------------------------------------------------


def dataset(problem: Problem, index: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``index``-th noisy data set of ``problem``: the same in every process.

    ``y`` has shape ``(n,)``, or ``(batch, n)`` for a batch (every fit has the same
    true parameters and its own noise). Seeds come from the problem name through
    CRC-32 (``hash`` is salted per process).
    """
    model = problem.model
    rng = np.random.default_rng([zlib.crc32(problem.name.encode()), index])
    shape = (problem.batch, problem.n) if problem.batch else (problem.n,)
    x = np.linspace(*model.x_range, problem.n)
    y = model.function(np)(x, *model.true) + model.noise * rng.standard_normal(shape)
    if problem.outliers:
        hit = rng.random(shape) < problem.outliers
        y[hit] += rng.uniform(1.0, 3.0, hit.sum())
    return x, y


def max_error(popt: np.ndarray, true: tuple[float, ...]) -> float:
    """Largest parameter error, relative for parameters of magnitude above 1.

    ``popt`` is one fit's ``(n_params,)`` or a batch's ``(batch, n_params)``: the
    largest error of any fit.
    """
    true_arr = np.asarray(true, dtype=float)
    error = np.abs(np.asarray(popt, dtype=float) - true_arr) / np.maximum(np.abs(true_arr), 1.0)
    return float(np.max(error))


def is_accurate(popt: np.ndarray, model: Model) -> bool:
    """Whether every parameter (of every fit of a batch) is within tolerance of the truth."""
    popt = np.asarray(popt, dtype=float)
    return popt.shape[-1:] == (len(model.true),) and bool(
        np.allclose(popt, model.true, rtol=model.rtol, atol=model.atol)
    )
