"""Memo of compiled solver programs.

``curve_fit`` and ``least_squares`` build their residual closures anew on every call;
jitting those closures directly would trace and compile on every call. Instead each
call computes a key from what determines the program (the user's model object, the
static options, the static part of ``args``) and reuses the jitted program stored
under it. JAX's own cache inside that jitted program then specialises it per shape
and dtype.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

DEFAULT_MAX_SIZE = 128


class ProgramCache:
    """A thread-safe, least-recently-used map from keys to jitted programs.

    Parameters
    ----------
    max_size : int
        Number of programs kept; the least recently used is dropped beyond it.
    """

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE) -> None:
        self.max_size = max_size
        self._programs: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get_or_build(self, key: Hashable | None, build: Callable[[], Any]) -> Any:
        """The program stored under ``key``, built (and stored) on a miss.

        A ``None`` key means the program cannot be shared (for example a model that
        closes over unhashable state): it is built and not stored.
        """
        if key is None:
            return build()
        with self._lock:
            program = self._programs.get(key)
            if program is not None:
                self._programs.move_to_end(key)
                self.hits += 1
                return program
            self.misses += 1
        program = build()
        with self._lock:
            # Another thread may have stored one meanwhile; keep the first.
            program = self._programs.setdefault(key, program)
            self._programs.move_to_end(key)
            while len(self._programs) > self.max_size:
                self._programs.popitem(last=False)
        return program

    def clear(self) -> None:
        """Drop every stored program and reset the counters."""
        with self._lock:
            self._programs.clear()
            self.hits = 0
            self.misses = 0

    def __len__(self) -> int:
        return len(self._programs)


programs = ProgramCache()
