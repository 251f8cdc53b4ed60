"""Curve fits of large data: chunked, sharded over devices, streamed from the host.

:func:`curve_fit_large` (and ``curve_fit(..., chunk_size=...)``) fit with
:func:`nlsq.solvers.gram.trf_chunked`: the Jacobian is never formed, only its
``n x n`` Gram matrix, accumulated over chunks inside the compiled program. The
answer is the in-memory fit's (see ``docs/large_data.rst``).

The data reach the compiled program in one of two ways:

* **resident**: padded to ``B`` blocks of ``C`` chunks of ``S`` points and put on
  the devices, the block axis sharded over a one-axis :class:`jax.sharding.Mesh`;
* **streamed**: left on the host (a NumPy array, a ``np.memmap``, or a callable
  yielding chunks) and loaded chunk by chunk through ``io_callback``, once per
  evaluation. Used when the data exceed the memory budget
  (``large.memory_budget``), or when asked for.
"""

from __future__ import annotations

import functools
import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import io_callback
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from nlsq import config
from nlsq.api.callback import CallbackWrapper
from nlsq.api.least_squares import ValidatedOptions, validate_options
from nlsq.cache import ensure_disk_cache, programs, stats, track_compiles
from nlsq.errors import TraceTimeInputError, out_of_memory_advice, plain_input_errors
from nlsq.identity import model_key
from nlsq.loss import LossFunction, resolve_loss
from nlsq.pointwise import acts_pointwise
from nlsq.result import FitData, FitResult
from nlsq.solvers.gram import ChunkSource, covariance_from_gram, trf_chunked
from nlsq.solvers.progress import host_callback_hook
from nlsq.solvers.termination import INITIAL_NOT_FINITE, TERMINATION_MESSAGES
from nlsq.transfer import device_values, device_words, host_values, host_words

logger = logging.getLogger("nlsq")

#: Mesh axis name of the data.
DATA_AXIS = "data"

#: Smallest and largest default chunk (points).
MIN_CHUNK, MAX_CHUNK = 1 << 12, 1 << 20


# --- Selection ---------------------------------------------------------------------


#: What to do when a chunked fit runs out of memory.
CHUNKED_ADVICE = (
    "Use a smaller chunk_size, or a lower memory budget (memory_budget=..., setting "
    "large.memory_budget, environment variable NLSQ_MEMORY_BUDGET), from which the "
    "chunk size is chosen; stream=True keeps the data on the host."
)


def memory_budget(argument: Any = None) -> int:
    """The memory budget in bytes (``large.memory_budget`` / ``NLSQ_MEMORY_BUDGET``)."""
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


# --- Host data ----------------------------------------------------------------------


class ChunkError(ValueError):
    """A chunk of the data is invalid (non-finite values, wrong shape)."""


def _check_chunk(index: int, start: int, x: np.ndarray, y: np.ndarray, w: Any, lead: tuple) -> None:
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
            _check_chunk(index, start, x, y, weights, self.lead)
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
            _check_chunk(index, start, x, y, weights, data.lead)
            data.sizes.append(y.shape[0])
            start += y.shape[0]
        if not data.sizes or start == 0:
            raise ValueError(
                "The chunk source yielded no data; the callable must return a new "
                "iterable of (xdata, ydata) chunks on every call (e.g. a generator function)."
            )
        return data


# --- Layout --------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """``n_blocks`` blocks of ``n_chunks`` chunks of ``chunk_size`` points."""

    n_blocks: int
    n_chunks: int
    chunk_size: int


def _pad_chunk(
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


def _resident_blocks(data: ArrayData, layout: Layout, dtype: np.dtype) -> tuple:
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
        xc, yc, wc = _pad_chunk(x, y, w, S, dtype, data.has_sigma)
        b, c = divmod(index, C)
        xs[b, c], ys[b, c] = xc, yc
        if ws is not None:
            ws[b, c] = wc
    counts = np.clip(data.m - np.arange(B) * C * S, 0, C * S).astype(np.int64)
    return (xs, ys, ws), counts


# --- Host side of the compiled program ------------------------------------------------


@dataclass
class _FitContext:
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
_fits: dict[int, _FitContext] = {}


def _stream_chunk(context: _FitContext, c: int) -> tuple:
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
    _check_chunk(c, context.consumed, x, y, weights, data.lead)
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
        xc, yc, wc = _pad_chunk(*_stream_chunk(context, c), S, dtype, has_sigma)
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


def _progress(token: int, x, fun, cost, nit, nfev) -> bool:
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


# --- The compiled program --------------------------------------------------------------


@dataclass(frozen=True)
class LargeSpec:
    """Static configuration of a chunked program (part of its cache key)."""

    bounded: bool
    loss: str | LossFunction
    jac_scale: bool
    dtype: str
    streamed: bool
    has_sigma: bool
    lead: tuple
    layout: Layout


def _chunk_residual(f: Callable, has_sigma: bool) -> Callable:
    def residual(p: jax.Array, chunk: tuple) -> jax.Array:
        x, y, *w = chunk
        model = jnp.asarray(f(x, *p))
        if model.shape != y.shape:
            try:
                model = jnp.broadcast_to(model, y.shape)
            except ValueError as error:
                raise TraceTimeInputError(
                    f"The model returned shape {model.shape} for a chunk of "
                    f"{y.shape[0]} points; it must return one value per point."
                ) from error
        r = model - y
        return w[0] * r if has_sigma else r

    return residual


def _loader(token: jax.Array, spec: LargeSpec) -> Callable[[jax.Array], tuple]:
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


def _build_program(f: Callable, spec: LargeSpec) -> Callable:
    loss = resolve_loss(spec.loss)
    residual = _chunk_residual(f, spec.has_sigma)
    layout = spec.layout

    def program(x0, lb, ub, blocks, counts, token, ftol, xtol, gtol, max_nfev, x_scale, f_scale):
        if spec.streamed:
            source = ChunkSource(
                None, counts, _loader(token, spec), layout.n_chunks, layout.chunk_size
            )
        else:
            blocks = tuple(b for b in blocks if b is not None)
            source = ChunkSource(blocks, counts, None, layout.n_chunks, layout.chunk_size)
        hook = host_callback_hook(_progress, token)
        raw = trf_chunked(
            residual,
            source,
            x0,
            lb,
            ub,
            ftol,
            xtol,
            gtol,
            max_nfev,
            x_scale,
            f_scale,
            bounded=spec.bounded,
            loss=loss,
            jac_scale=spec.jac_scale,
            callback=hook,
        )
        JTJ = raw.jac.matrix
        return {
            "x": raw.x,
            "cost": raw.cost,
            "grad": raw.grad,
            "optimality": raw.optimality,
            "active_mask": raw.active_mask,
            "nfev": raw.nfev,
            "njev": raw.njev,
            "status": raw.status,
            "initial_cost": raw.initial_cost,
            "JTJ": JTJ,
            "pcov": covariance_from_gram(JTJ, jnp.sum(counts)),
        }

    return jax.jit(program)


# --- Devices ---------------------------------------------------------------------------


def data_mesh(devices: Any = None) -> Mesh | None:
    """A one-axis mesh (axis ``'data'``) over ``devices``; None for a single device.

    ``devices``: None (all devices, ``jax.devices()``), a :class:`Mesh` with one axis,
    an int (the first that many devices), or a sequence of devices.
    """
    if isinstance(devices, Mesh):
        if len(devices.axis_names) != 1:
            raise ValueError("The mesh for data sharding must have exactly one axis.")
        return devices if devices.size > 1 else None
    if devices is None:
        devices = jax.devices()
    elif isinstance(devices, int):
        devices = jax.devices()[:devices]
    devices = list(devices)
    return Mesh(np.array(devices), (DATA_AXIS,)) if len(devices) > 1 else None


def _place(host_arrays: Any, mesh: Mesh | None) -> Any:
    """Device arrays with the leading (block) axis sharded over ``mesh``.

    With several processes (``jax.distributed.initialize``), each process passes its
    own blocks and they are assembled into one global array.
    """
    if mesh is None:
        return jax.device_put(host_arrays)
    sharding = NamedSharding(mesh, PartitionSpec(mesh.axis_names[0]))
    if jax.process_count() > 1:
        return jax.tree.map(
            lambda a: jax.make_array_from_process_local_data(sharding, a), host_arrays
        )
    return jax.device_put(host_arrays, sharding)


def _global_points(local_m: int) -> tuple[int, int]:
    """``(total points, most points of any process)`` over all processes."""
    if jax.process_count() == 1:
        return local_m, local_m
    from jax.experimental import multihost_utils

    sizes = np.asarray(multihost_utils.process_allgather(np.asarray(local_m, np.int64)))
    return int(sizes.sum()), int(sizes.max())


# --- Entry points ------------------------------------------------------------------------


def _validated_options(p0: np.ndarray, bounds: Any, kwargs: dict) -> ValidatedOptions:
    kwargs = dict(kwargs)
    if "max_nfev" not in kwargs:
        kwargs["max_nfev"] = kwargs.pop("maxfev", None)
    options = validate_options(
        p0,
        jac=None,
        bounds=bounds,
        method="trf",
        ftol=kwargs.pop("ftol", 1e-8),
        xtol=kwargs.pop("xtol", 1e-8),
        gtol=kwargs.pop("gtol", 1e-8),
        x_scale=kwargs.pop("x_scale", None),
        loss=kwargs.pop("loss", "linear"),
        f_scale=kwargs.pop("f_scale", 1.0),
        tr_solver=None,
        jac_sparsity=None,
        max_nfev=kwargs.pop("max_nfev"),
        verbose=kwargs.pop("verbose", 0),
        callback=kwargs.pop("callback", None),
        dtype=kwargs.pop("dtype", None),
        jacobian_mode=kwargs.pop("jacobian_mode", None),
    )
    if kwargs:
        raise TypeError(
            f"curve_fit_large() got an unexpected keyword argument '{next(iter(kwargs))}'"
        )
    return options


def fit_chunked(
    f: Callable,
    data: ArrayData | IterableData,
    options: ValidatedOptions,
    *,
    absolute_sigma: bool = False,
    chunk_size: int | None = None,
    devices: Any = None,
    stream: bool | None = None,
    budget: int | None = None,
) -> FitResult:
    """The chunked fit of validated options on host data (see :func:`curve_fit_large`)."""
    dtype = np.dtype(options.dtype)
    n = options.inputs.x0.size
    budget = memory_budget(budget)
    if stream is None:
        stream = isinstance(data, IterableData) or data.nbytes > budget
    if isinstance(data, IterableData) and not stream:
        raise ValueError("Data from a chunk source are always streamed (stream=True).")
    mesh = None if stream else data_mesh(devices)
    n_blocks = 1 if mesh is None else mesh.size
    local_blocks = 1 if mesh is None else len(mesh.local_devices)
    if isinstance(data, IterableData):
        S = chunk_size or max(data.sizes)
        if max(data.sizes) > S:
            raise ValueError(
                f"chunk_size={S} is smaller than a chunk of the source ({max(data.sizes)})."
            )
        layout = Layout(1, len(data.sizes), S)
        m_total = data.m
    else:
        m_total, m_most = _global_points(data.m)
        S = chunk_size or default_chunk_size(m_most, n, dtype.itemsize, budget, local_blocks)
        if S <= 0:
            raise ValueError("`chunk_size` must be a positive integer.")
        per_block = -(-m_most // local_blocks)
        layout = Layout(n_blocks, max(1, -(-per_block // S)), int(S))
    has_sigma = data.has_sigma
    lead = data.lead
    spec = LargeSpec(
        bounded=options.bounded,
        loss=options.loss,
        jac_scale=options.jac_scale,
        dtype=dtype.name,
        streamed=stream,
        has_sigma=has_sigma,
        lead=tuple(lead),
        layout=layout,
    )
    key = model_key(f)
    cache_key = (
        None if key is None or not config.get("cache_config.enable") else ("large", key, spec)
    )
    try:
        hash(cache_key)
    except TypeError:
        cache_key = None
    program = programs.get_or_build(cache_key, lambda: _build_program(f, spec))

    if stream:
        blocks, counts = (None, None, None), np.asarray([data.m], np.int64)
        placed = (blocks, counts)
    else:
        local_layout = Layout(local_blocks, layout.n_chunks, layout.chunk_size)
        host_blocks, counts = _resident_blocks(data, local_layout, dtype)
        # 64-bit mode is thread-local: without it device_put would round to float32.
        with jax.enable_x64(True), out_of_memory_advice(CHUNKED_ADVICE):
            placed = _place((host_blocks, counts), mesh)
        del host_blocks
    logger.info(
        "large fit: %d points, %d parameters, %s, %d block(s) x %d chunk(s) x %d points",
        m_total,
        n,
        "streamed from the host" if stream else "resident on the device(s)",
        layout.n_blocks,
        layout.n_chunks,
        layout.chunk_size,
    )
    callback = None if options.callback is None else CallbackWrapper(options.callback)
    token = next(_tokens)
    context = _FitContext(data if stream else None, layout, dtype, callback)
    with _lock:
        _fits[token] = context
    inputs = options.inputs
    ensure_disk_cache()
    try:
        with (
            jax.enable_x64(True),
            plain_input_errors(),
            out_of_memory_advice(CHUNKED_ADVICE),
            track_compiles() as call,
        ):
            out = program(
                inputs.x0.astype(dtype),
                inputs.lb.astype(dtype),
                inputs.ub.astype(dtype),
                placed[0],
                placed[1],
                np.asarray(token, np.int64),
                np.asarray(inputs.ftol, dtype),
                np.asarray(inputs.xtol, dtype),
                np.asarray(inputs.gtol, dtype),
                np.asarray(inputs.max_nfev, np.int64),
                inputs.x_scale.astype(dtype),
                np.asarray(inputs.f_scale, dtype),
            )
            out = jax.device_get(out)
    finally:
        with _lock:
            _fits.pop(token, None)
    if context.error is not None:
        raise context.error
    if callback is not None:
        callback.raise_error()
    status = int(out["status"])
    if status == INITIAL_NOT_FINITE:
        raise ValueError("Residuals are not finite in the initial point.")
    message = TERMINATION_MESSAGES[status]
    if status <= 0:
        raise RuntimeError("Optimal parameters not found: " + message)
    from nlsq.api.curve_fit import scale_covariance

    cost = float(out["cost"])
    pcov, covariance_warning = scale_covariance(
        np.array(out["pcov"], dtype=float), 2 * cost, m_total, n, absolute_sigma
    )
    logger.info(
        "large fit: %s nfev %d, cost %.6e, %.2f s",
        message,
        int(out["nfev"]),
        cost,
        time.perf_counter() - context.start,
    )
    popt = np.asarray(out["x"], dtype=float)
    return FitResult(
        popt=popt,
        pcov=pcov,
        status=status,
        message=message,
        success=True,
        nfev=int(out["nfev"]),
        njev=int(out["njev"]),
        cost=cost,
        optimality=float(out["optimality"]),
        active_mask=np.asarray(out["active_mask"], dtype=int),
        cache_stats=stats.summary(call),
        covariance_warning=covariance_warning,
        device_residuals=_LazyRows(f, data, popt, dtype, jacobian=False),
        device_jac=_LazyRows(f, data, popt, dtype, jacobian=True),
        n_points=m_total,
        absolute_sigma=absolute_sigma,
        model=f,
        data=_fit_data(data, m_total),
    )


def _fit_data(data: ArrayData | IterableData, m_total: int) -> FitData | None:
    """The data for ``FitResult``'s statistics: only arrays that hold every point
    (not a chunk source, not one process's part of a multi-process fit)."""
    if not isinstance(data, ArrayData) or data.m != m_total:
        return None
    kind = "none" if data.weights is None else "diagonal"
    return FitData(data.x, data.y, kind, data.weights)


class _LazyRows:
    """Residuals (or the Jacobian) at ``popt``, computed chunk by chunk on request."""

    def __init__(self, f, data, popt, dtype, jacobian: bool) -> None:
        self._f, self._data, self._popt, self._dtype = f, data, popt, dtype
        self._jacobian = jacobian

    def numpy(self) -> np.ndarray:
        """The rows, as a float64 NumPy array (computed on each call)."""
        has_sigma = self._data.has_sigma
        residual = _chunk_residual(self._f, has_sigma)
        evaluate = jax.jit(jax.jacfwd(residual) if self._jacobian else residual)
        chunks = (
            self._data.make()
            if isinstance(self._data, IterableData)
            else self._data.chunks(MAX_CHUNK)
        )
        parts = []
        with jax.enable_x64(True):
            for index, item in enumerate(chunks):
                x, y, weights = item
                if isinstance(self._data, IterableData):
                    x, y, weights = IterableData.unpack(index, item)
                chunk = (x, y) + ((weights * np.ones_like(y),) if has_sigma else ())
                parts.append(np.asarray(evaluate(self._popt.astype(self._dtype), chunk), float))
        return np.concatenate(parts)


def curve_fit_large(
    f: Callable,
    xdata: Any,
    ydata: Any = None,
    p0: Any = None,
    sigma: Any = None,
    absolute_sigma: bool = False,
    check_finite: bool = True,
    bounds: Any = (-np.inf, np.inf),
    *,
    chunk_size: int | None = None,
    devices: Any = None,
    stream: bool | None = None,
    memory_budget: Any = None,
    **kwargs: Any,
) -> FitResult:
    """Fit ``f`` to data too large for the in-memory solver, with its exact answer.

    The Jacobian is never formed: ``J^T J``, ``J^T f`` and the cost are accumulated
    chunk by chunk inside the compiled fit and the trust-region step is solved from
    them, so ``popt`` and ``pcov`` are those of :func:`nlsq.curve_fit` (to rounding)
    in ``O(chunk_size x n)`` working memory. See ``docs/large_data.rst``.

    Parameters
    ----------
    f : callable
        The model ``f(x, p1, ..., pn)`` written with ``jax.numpy``; it must act point
        by point along the data axis (its value at a point depends on that point only).
    xdata : array_like, np.memmap, or callable
        The independent variable, data axis last; or a callable returning an iterable
        of chunks ``(xdata, ydata)`` or ``(xdata, ydata, sigma)`` (then ``ydata`` and
        ``sigma`` are not given). The callable is called once to check the chunks,
        then once per function evaluation; it must yield the same chunks each time.
    ydata : array_like or np.memmap
        The dependent data (length ``M``).
    p0 : array_like, optional
        Initial guess (by default 1 for each parameter, as in ``curve_fit``).
    sigma : None, scalar or M-length array_like
        Standard deviations of ``ydata`` (a 2-D covariance is not supported here).
    absolute_sigma, check_finite, bounds
        As for :func:`nlsq.curve_fit`; ``check_finite`` is applied chunk by chunk and
        names the bad chunk.
    chunk_size : int, optional
        Points per chunk; by default from the memory budget (between 4096 and 2**20).
    devices : None, int, sequence of devices or Mesh
        Devices to shard the data over (default: all of ``jax.devices()``; several
        processes after ``jax.distributed.initialize`` each pass their own part of the
        data). Streamed data use one device.
    stream : bool, optional
        Keep the data on the host and load one chunk at a time (default: when the data
        exceed the memory budget, or come from a callable).
    memory_budget : int or str, optional
        Overrides the ``large.memory_budget`` setting (``NLSQ_MEMORY_BUDGET``).
    **kwargs
        ``ftol``, ``xtol``, ``gtol``, ``x_scale``, ``loss``, ``f_scale``,
        ``max_nfev``/``maxfev``, ``callback``, ``dtype``, as for ``curve_fit``.

    Returns
    -------
    FitResult
        Unpacks as ``popt, pcov``; ``residuals`` and ``jac`` are computed chunk by
        chunk when asked for (the Jacobian is ``M x n``: mind its size).

    Raises
    ------
    ChunkError
        A chunk holds NaN/inf (with ``check_finite``) or has the wrong shape; the
        message names the chunk and its points.
    """
    if callable(xdata) and not isinstance(xdata, np.ndarray):
        if ydata is not None or sigma is not None:
            raise ValueError("With a chunk source, ydata and sigma come from its chunks.")
        data: ArrayData | IterableData = IterableData.scan(xdata)
        first_x = IterableData.unpack(0, next(iter(xdata())))[0]
    else:
        x = xdata if isinstance(xdata, np.ndarray) else np.asarray(xdata, float)
        y = ydata if isinstance(ydata, np.ndarray) else np.asarray(ydata, float)
        if y.ndim != 1 or y.size == 0:
            raise ValueError("`ydata` must be a non-empty 1-D array.")
        if x.shape[-1:] != y.shape:
            raise ValueError(
                f"`xdata` of shape {x.shape} must have the data axis last, of length {y.size}."
            )
        weights = None
        if sigma is not None:
            sigma = np.asarray(sigma)
            if sigma.size != 1 and sigma.shape != y.shape:
                raise ValueError("`sigma` must be a scalar or have the length of `ydata`.")
            weights = 1.0 / sigma
        data = ArrayData(x, y, weights, bool(check_finite))
        first_x = np.asarray(x[..., : min(32, y.size)], float)
    p0, bounds = _initial_guess(f, p0, bounds)
    options = _validated_options(p0, bounds, kwargs)
    if not acts_pointwise(f, first_x, options.inputs.x0):
        raise ValueError(
            "curve_fit_large needs a model that acts point by point along the data axis "
            "(its value at a point must depend on that point only)."
        )
    return fit_chunked(
        f,
        data,
        options,
        absolute_sigma=absolute_sigma,
        chunk_size=chunk_size,
        devices=devices,
        stream=stream,
        budget=memory_budget,
    )


def _initial_guess(f: Callable, p0: Any, bounds: Any) -> tuple[np.ndarray, Any]:
    from scipy.optimize import Bounds

    from nlsq.api.curve_fit import _initialize_feasible, _number_of_parameters
    from nlsq.bounds import prepare_bounds

    n = _number_of_parameters(f) if p0 is None else np.atleast_1d(p0).size
    if isinstance(bounds, Bounds):
        bounds = (bounds.lb, bounds.ub)
    lb, ub = prepare_bounds(bounds, n)
    if p0 is None:
        p0 = _initialize_feasible(lb, ub)
    return np.atleast_1d(np.asarray(p0, float)), (lb, ub)


# --- Dispatch from curve_fit ---------------------------------------------------------------


def chunked_fit_reason(f: Callable, jac: Any, prepared: Any, chunk_size: int | None) -> str | None:
    """Why the fit of ``curve_fit``'s prepared inputs cannot run chunked (None: it can)."""
    options = prepared.options
    if prepared.leastsq is not None or options.method != "trf":
        return "method='trf' only"
    if jac is not None:
        return "the autodiff Jacobian only (jac=None)"
    if prepared.sigma_kind == "covariance":
        return "1-D sigma only"
    xdata = prepared.xdata
    if not isinstance(xdata, np.ndarray) or xdata.shape[-1:] != prepared.ydata.shape:
        return "xdata as an array with the data axis last"
    if options.verbose == 2:
        return "verbose < 2"
    return None


def use_chunked(f: Callable, jac: Any, prepared: Any, chunk_size: int | None) -> bool:
    """Whether ``curve_fit`` runs chunked: when asked (``chunk_size``), or when the
    in-memory fit's estimated memory exceeds the budget and the problem allows it.

    Raises
    ------
    ValueError
        If ``chunk_size`` is given for a problem the chunked solver cannot fit.
    """
    if chunk_size is not None and (isinstance(chunk_size, bool) or int(chunk_size) <= 0):
        raise ValueError("`chunk_size` must be a positive integer.")
    reason = chunked_fit_reason(f, jac, prepared, chunk_size)
    m, n = prepared.ydata.size, prepared.n_params
    itemsize = np.dtype(prepared.options.dtype).itemsize
    if chunk_size is None:
        estimate = in_memory_bytes(m, n, itemsize)
        if estimate <= memory_budget() or reason is not None:
            return False
    elif reason is not None:
        raise ValueError(
            f"chunk_size: the chunked solver supports {reason}; remove chunk_size to fit in memory."
        )
    pointwise = acts_pointwise(f, prepared.xdata, prepared.options.inputs.x0)
    if not pointwise and chunk_size is not None:
        raise ValueError(
            "chunk_size: the model must act point by point along the data axis (its value "
            "at a point must depend on that point only); remove chunk_size to fit in memory."
        )
    if pointwise and chunk_size is None:
        logger.info(
            "curve_fit: %d points x %d parameters exceed the memory budget in memory "
            "(about %.0f MiB); fitting in chunks",
            m,
            n,
            in_memory_bytes(m, n, itemsize) / 2**20,
        )
    return pointwise


def curve_fit_chunked(
    f: Callable, prepared: Any, absolute_sigma: bool, chunk_size: int | None
) -> FitResult:
    """``curve_fit``'s fit of prepared inputs on the chunked solver."""
    weights = None
    if prepared.sigma_kind == "diagonal":
        weights = np.asarray(prepared.transform)
    data = ArrayData(prepared.xdata, prepared.ydata, weights, check_finite=False)
    return fit_chunked(
        f, data, prepared.options, absolute_sigma=absolute_sigma, chunk_size=chunk_size
    )
