"""How nlsq's programs are compiled: with nlsq's compiler options, once per input
signature.

The options are passed when a program is compiled, not to ``jax.jit``: a jitted
function with compiler options cannot run inside another ``jax.jit``, and nlsq's
programs do (:func:`nlsq.fit` under the user's transformations).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable
from typing import Any

import jax

from nlsq.cache import jax_disk_writes

logger = logging.getLogger("nlsq")

#: XLA:CPU's MLIR fusion emitters (its default) take about twice as long as its
#: elemental emitters to compile a fit's program (a bounded 3-parameter fit: 1.4 s
#: against 0.75 s on a 2-core EPYC), for programs that run as fast. The option belongs
#: to nlsq's programs alone; other backends ignore it.
PROGRAM_COMPILER_OPTIONS = {"xla_cpu_use_fusion_emitters": False}

#: XLA's error for an option it does not know.
_UNKNOWN_OPTION = "No such compile option"

#: The options to pass: None once this XLA has refused them.
_accepted: dict[str, dict[str, Any] | None] = {"options": PROGRAM_COMPILER_OPTIONS}


def compile_lowered(lowered: Any, jax_cache: bool = True) -> Any:
    """``lowered`` (a ``jax.stages.Lowered``) compiled with
    :data:`PROGRAM_COMPILER_OPTIONS`, or without them where this XLA does not know one
    (then never tried again in this process).

    With ``jax_cache`` JAX's persistent cache keeps the executable when its compile time
    reaches nlsq's threshold (``cache_config.disk_cache_min_compile_time_secs``, 0 by
    default) instead of JAX's; without, it keeps nothing (nlsq stores the executable).
    """
    with jax_disk_writes(jax_cache):
        options = _accepted["options"]
        if options is not None:
            try:
                return lowered.compile(dict(options))
            except jax.errors.JaxRuntimeError as error:
                if _UNKNOWN_OPTION not in str(error):
                    raise
                logger.debug("compiling without %s: %s", options, error)
                _accepted["options"] = None
        return lowered.compile()


def input_signature(leaves: list) -> tuple:
    """What of each input decides a compiled executable: shape, dtype, weak type and
    placement of an array, the type of a Python scalar."""
    return tuple(_input_type(leaf) for leaf in leaves)


def _input_type(leaf: Any) -> Hashable:
    dtype = getattr(leaf, "dtype", None)
    if dtype is None:
        return ((), type(leaf).__name__)
    placement = leaf.sharding if isinstance(leaf, jax.Array) else None
    return (leaf.shape, dtype, getattr(leaf, "weak_type", False), placement)


class CompiledProgram:
    """``jitted`` compiled once per input signature by :func:`compile_lowered`.

    Called as ``jitted`` is (positional arguments); traced arguments (the program
    inside another transformation) go to ``jitted`` itself, and ``lower`` is its own.
    """

    def __init__(self, jitted: Callable) -> None:
        self.jitted = jitted
        self._executables: dict[Hashable, Callable] = {}
        self._lock = threading.Lock()

    def __call__(self, *args: Any) -> Any:
        leaves, treedef = jax.tree.flatten(args)
        if any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
            return self.jitted(*args)
        signature = (treedef, input_signature(leaves))
        executable = self._executable(signature, lambda: compile_lowered(self.jitted.lower(*args)))
        return executable(*args)

    def _executable(self, signature: Hashable, make: Callable[[], Callable]) -> Callable:
        """The executable of ``signature``, made once (threads wait for it)."""
        executable = self._executables.get(signature)
        if executable is None:
            with self._lock:
                executable = self._executables.get(signature)
                if executable is None:
                    executable = self._executables[signature] = make()
        return executable

    def lower(self, *args: Any) -> Any:
        return self.jitted.lower(*args)


def jit_program(fun: Callable) -> CompiledProgram:
    """``jax.jit(fun)``, compiled with nlsq's compiler options."""
    return CompiledProgram(jax.jit(fun))
