"""Compiled-solver cache, compile statistics and the persistent (disk) compile cache.

Three layers make repeated fits cheap:

1. :data:`programs` maps a key (model identity, static options) to a jitted solver
   program; JAX's own cache inside that program then holds one executable per input
   shape, and :mod:`nlsq.api.curve_fit` pads data lengths to size buckets so that
   many lengths share one shape.
2. JAX's persistent compilation cache, in the platformdirs user cache directory,
   lets a fresh process load an executable instead of compiling it.
3. :class:`CompileStats` counts the XLA compilations that really happen, from JAX's
   own monitoring events, attributed to the nlsq call that caused them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax

from nlsq import config

logger = logging.getLogger("nlsq")

DEFAULT_MAX_SIZE = 128

_BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_DISK_HIT_EVENT = "/jax/compilation_cache/cache_hits"


class ProgramCache:
    """A thread-safe, least-recently-used map from keys to jitted programs.

    Parameters
    ----------
    max_size : int or None
        Number of programs kept; ``None`` reads ``cache_config.max_size`` from the
        configuration at each insertion.
    """

    def __init__(self, max_size: int | None = DEFAULT_MAX_SIZE) -> None:
        self._max_size = max_size
        self._programs: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        #: One lock per key being built, so that concurrent misses build it once.
        self._building: dict[Hashable, threading.Lock] = {}
        self.hits = 0
        self.misses = 0

    @property
    def max_size(self) -> int:
        if self._max_size is not None:
            return self._max_size
        return config.get("cache_config.max_size")

    def get_or_build(self, key: Hashable | None, build: Callable[[], Any]) -> Any:
        """The program stored under ``key``, built (and stored) on a miss.

        A ``None`` key means the program must not be shared: it is built and not
        stored. Threads missing the same key at once build it once: the others wait
        for it (and count as hits).
        """
        if key is None:
            return build()
        program = self._lookup(key)
        if program is not None:
            return program
        with self._lock:
            building = self._building.setdefault(key, threading.Lock())
        with building:
            # Another thread may have built it while this one waited.
            program = self._lookup(key)
            if program is not None:
                return program
            with self._lock:
                self.misses += 1
            try:
                program = build()
                self._store(key, program)
            finally:
                with self._lock:
                    self._building.pop(key, None)
        return program

    def get(self, key: Hashable) -> Any:
        """The value stored under ``key``, or None."""
        return self._lookup(key)

    def put(self, key: Hashable, value: Any) -> None:
        """Store ``value`` under ``key`` (the least recently used one goes first)."""
        self._store(key, value)

    def _lookup(self, key: Hashable) -> Any:
        with self._lock:
            program = self._programs.get(key)
            if program is not None:
                self._programs.move_to_end(key)
                self.hits += 1
            return program

    def _store(self, key: Hashable, program: Any) -> None:
        max_size = self.max_size
        with self._lock:
            self._programs[key] = program
            self._programs.move_to_end(key)
            while len(self._programs) > max_size:
                self._programs.popitem(last=False)

    def clear(self) -> None:
        """Drop every stored program and reset the counters."""
        with self._lock:
            self._programs.clear()
            self.hits = 0
            self.misses = 0

    def __len__(self) -> int:
        return len(self._programs)


programs = ProgramCache(max_size=None)

#: The shape-level decisions of in-memory curve fits (options, compiled program, size
#: bucket), reused by calls that repeat one with new values (:mod:`nlsq.prepare.repeat`).
repeat_plans = ProgramCache(max_size=64)


@dataclass
class CallStats:
    """Compilations seen during one nlsq call."""

    compiles: int = 0
    disk_hits: int = 0
    compile_seconds: float = 0.0
    pending_disk_hit: bool = False

    @property
    def hit(self) -> bool:
        """True when the call ran already-compiled code (no compile, no disk load)."""
        return self.compiles == 0 and self.disk_hits == 0


@dataclass
class CompileStats:
    """Process-wide totals of nlsq calls and the compilations they caused."""

    calls: int = 0
    hits: int = 0
    compiles: int = 0
    disk_hits: int = 0
    compile_seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, call: CallStats) -> None:
        with self._lock:
            self.calls += 1
            self.hits += call.hit
            self.compiles += call.compiles
            self.disk_hits += call.disk_hits
            self.compile_seconds += call.compile_seconds

    def reset(self) -> None:
        with self._lock:
            self.calls = self.hits = self.compiles = self.disk_hits = 0
            self.compile_seconds = 0.0

    def summary(self, call: CallStats | None = None) -> dict[str, Any]:
        """Totals (and this call's figures, if given) as a plain dict."""
        with self._lock:
            info = {
                "total_calls": self.calls,
                "total_hits": self.hits,
                "total_compiles": self.compiles,
                "total_disk_hits": self.disk_hits,
                "total_compile_time_ms": 1e3 * self.compile_seconds,
                "hit_rate": self.hits / self.calls if self.calls else 0.0,
            }
        if call is not None:
            info = {
                "hit": call.hit,
                "compiles": call.compiles,
                "disk_hit": call.disk_hits > 0,
                "compile_time_ms": 1e3 * call.compile_seconds,
                **info,
            }
        return info


stats = CompileStats()

_active = threading.local()
_listeners_lock = threading.Lock()
_listeners_registered = False


def _on_duration_event(event: str, duration: float, **_: Any) -> None:
    call = getattr(_active, "call", None)
    if call is None or event != _BACKEND_COMPILE_EVENT:
        return
    if call.pending_disk_hit:
        # JAX reports a disk load as a backend compile, after its cache-hit event.
        call.pending_disk_hit = False
        call.disk_hits += 1
    else:
        call.compiles += 1
        call.compile_seconds += duration


def current_call() -> CallStats | None:
    """The figures of the nlsq call running in this thread (None outside one)."""
    return getattr(_active, "call", None)


def count_disk_load() -> None:
    """Count a program loaded from disk without JAX's cache (nlsq's own executables)."""
    call = current_call()
    if call is not None:
        call.disk_hits += 1


def _on_event(event: str, **_: Any) -> None:
    call = getattr(_active, "call", None)
    if call is not None and event == _DISK_HIT_EVENT:
        call.pending_disk_hit = True


def _register_listeners() -> None:
    global _listeners_registered
    if _listeners_registered:
        return
    with _listeners_lock:
        if not _listeners_registered:
            jax.monitoring.register_event_duration_secs_listener(_on_duration_event)
            jax.monitoring.register_event_listener(_on_event)
            _listeners_registered = True


@contextlib.contextmanager
def track_compiles() -> Iterator[CallStats]:
    """Attribute the JAX compilations in this block (this thread) to one call.

    A backend-compile event counts as a compile, unless a persistent-cache hit event
    came just before it (JAX reports a load from disk that way): then as a disk hit.
    """
    _register_listeners()
    call = CallStats()
    previous = getattr(_active, "call", None)
    _active.call = call
    start = time.perf_counter()
    try:
        yield call
    finally:
        _active.call = previous
        stats.add(call)
        if call.compiles or call.disk_hits:
            logger.debug(
                "compiled %d program(s), loaded %d from disk, %.0f ms (call took %.0f ms)",
                call.compiles,
                call.disk_hits,
                1e3 * call.compile_seconds,
                1e3 * (time.perf_counter() - start),
            )


# --- persistent compilation cache ---------------------------------------------------

_disk_lock = threading.Lock()
_disk_state: dict[str, Any] = {"configured": False, "dir": None, "own": False}


def executable_store_dir() -> Path | None:
    """Where nlsq keeps whole compiled programs (see :mod:`nlsq.program.stored`): a
    folder of nlsq's persistent cache directory; None when the disk cache is off or
    the JAX cache directory is the user's own."""
    directory = ensure_disk_cache()
    if directory is None or not _disk_state["own"]:
        return None
    return directory / "executables"


def default_disk_cache_dir() -> Path:
    """``<user cache dir>/nlsq/jax-compilation-cache`` (platformdirs)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("nlsq")) / "jax-compilation-cache"


def _writable_directory(path: Path) -> str | None:
    """``None`` if ``path`` can hold cache files, else the reason it cannot."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".nlsq-write-test-"):
            pass
    except (OSError, ValueError) as error:  # ValueError: a NUL byte in the path
        return str(error)
    return None


def ensure_disk_cache() -> Path | None:
    """Point JAX's persistent compilation cache at nlsq's directory, once per process.

    Does nothing when disabled by configuration (``cache_config.disk_cache_enable``
    or ``NLSQ_DISK_CACHE=0``), or when the user already configured a JAX cache
    directory (which is then used as it is). An unusable directory gives a
    :class:`nlsq.config.ConfigWarning` and fits go on without a disk cache.

    Returns
    -------
    Path or None
        The cache directory in use.
    """
    if _disk_state["configured"]:
        return _disk_state["dir"]
    with _disk_lock:
        if _disk_state["configured"]:
            return _disk_state["dir"]
        _disk_state["configured"] = True
        existing = jax.config.jax_compilation_cache_dir
        if existing:
            _disk_state["dir"] = Path(existing)
            return _disk_state["dir"]
        if not config.get("cache_config.disk_cache_enable"):
            return None
        directory = config.get("cache_config.disk_cache_dir") or default_disk_cache_dir()
        problem = _writable_directory(directory)
        if problem is not None:
            warnings.warn(
                f"nlsq's persistent compilation cache is disabled: cannot write to "
                f"{directory} ({problem}). Fits work as usual, compiled from scratch. Set "
                "NLSQ_DISK_CACHE_DIR to a writable directory, or NLSQ_DISK_CACHE=0 to turn "
                "the cache off.",
                config.ConfigWarning,
                stacklevel=4,
            )
            return None
        jax.config.update("jax_compilation_cache_dir", os.fspath(directory))
        _disk_state["dir"] = directory
        _disk_state["own"] = True
        logger.debug("persistent compilation cache at %s", directory)
        return directory


def jax_disk_writes(allowed: bool) -> contextlib.AbstractContextManager:
    """Around a compile of one of nlsq's programs (this thread only): JAX's persistent
    cache stores it even when it compiles fast (``allowed``), or not at all (for the
    programs that nlsq stores itself)."""
    if not allowed:
        return _jax_disk_threshold(float("inf"))
    return _jax_disk_threshold(config.get("cache_config.disk_cache_min_compile_time_secs"))


@contextlib.contextmanager
def _jax_disk_threshold(seconds: float) -> Iterator[None]:
    """JAX's minimum compile time for writing to its persistent cache, in this thread."""
    state = getattr(jax._src.config, "persistent_cache_min_compile_time_secs", None)
    if state is None or not callable(state):
        yield
        return
    with state(seconds):
        yield


def cache_info() -> dict[str, Any]:
    """Statistics of nlsq's compiled-program cache.

    Returns
    -------
    dict
        ``programs`` (stored), ``max_size``, the totals of nlsq calls, hits (calls
        that compiled nothing), compiles and disk loads counted from JAX's compile
        events, compile time, ``hit_rate``, and ``disk_cache_dir`` (``None`` when the
        persistent cache is not in use).
    """
    return {
        "programs": len(programs),
        "max_size": programs.max_size,
        **stats.summary(),
        "disk_cache_dir": None if _disk_state["dir"] is None else str(_disk_state["dir"]),
    }


def clear_cache() -> None:
    """Drop nlsq's compiled programs (in memory) and reset the statistics.

    The persistent disk cache is left as it is; delete its directory to empty it.
    """
    programs.clear()
    repeat_plans.clear()
    stats.reset()
