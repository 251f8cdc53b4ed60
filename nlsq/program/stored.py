"""Whole compiled single-fit programs kept on disk, so that a fresh process skips
lowering as well as compiling.

JAX's persistent cache is keyed on the lowered program, so a warm start still traces
the fit (model, solver, covariance) and lowers it to StableHLO, and lowering costs
about twice what tracing does. Here the executable itself is stored under a digest of
the traced program (the jaxpr's text, which names every operation, shape and static
parameter, and the values of its constants), the input structure, and what the jaxpr
does not show: the JAX and jaxlib versions (lowering rules), nlsq's source, the
backend, the CPU and JAX's configuration. Any change to the computation gives another
digest, so a stale executable is never loaded; an entry that cannot be loaded is
compiled again.

Executables are written only when they were compiled here: one that JAX loaded from
its own cache does not serialize reliably on XLA:CPU.
"""

from __future__ import annotations

import functools
import logging
import os
import pickle
import platform
import tempfile
import time
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

import jax
import numpy as np
import xxhash

from nlsq import config
from nlsq.cache import (
    count_disk_load,
    current_call,
    executable_store_dir,
)
from nlsq.program.compiler import CompiledProgram, compile_lowered, input_signature

logger = logging.getLogger("nlsq")

#: Marks a repr that holds a memory address: a key of this process only.
_ADDRESS_MARK = " at 0x"
#: In the name of every primitive that calls back into Python (pure, io and debug
#: callbacks).
_CALLBACK_MARK = "callback"


class StoredProgram(CompiledProgram):
    """A jitted single-fit program whose executables come from (and go to) the store.

    Called as the jitted program is, ``program(controls, data, padded=...)``. Traced
    arguments (the program inside another transformation) go to the jitted program.
    Each input signature gets one executable: loaded from the store, or compiled with
    :func:`nlsq.program.compiler.compile_lowered` and then stored. Without a
    ``directory`` nothing is stored.
    """

    def __init__(self, jitted: Callable, directory: Path | None) -> None:
        super().__init__(jitted)
        self._directory = directory

    def __call__(self, controls: Any, data: Any, padded: bool) -> Any:
        leaves, treedef = jax.tree.flatten((controls, data))
        if any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
            return self.jitted(controls, data, padded=padded)
        signature = (treedef, padded, input_signature(leaves))
        executable = self._executable(
            signature, lambda: self._load_or_compile(signature, controls, data, padded)
        )
        return executable(controls, data)

    def lower(self, controls: Any, data: Any, padded: bool) -> Any:
        """The jitted program lowered for these arguments (``padded`` is static)."""
        return self.jitted.lower(controls, data, padded=padded)

    def _load_or_compile(
        self, signature: tuple, controls: Any, data: Any, padded: bool
    ) -> Callable:
        """The executable of one signature: loaded from the store, or compiled (and
        stored when it is worth it and was compiled here)."""
        start = time.perf_counter()
        traced = self.jitted.trace(controls, data, padded=padded)
        path = self._path(signature[0], traced.jaxpr)
        executable = None if path is None else load_executable(path)
        if executable is not None:
            count_disk_load()
            return executable
        call = current_call()
        loads_before = 0 if call is None else call.disk_hits
        lowered = traced.lower()
        # Where nlsq's store holds this program, JAX's cache need not hold it as well.
        executable = compile_lowered(lowered, jax_cache=path is None)
        worth_storing = time.perf_counter() - start >= config.get(
            "cache_config.disk_cache_min_compile_time_secs"
        )
        compiled_here = call is None or call.disk_hits == loads_before
        if path is not None and worth_storing and compiled_here:
            store_executable(path, executable)
        return executable

    def _path(self, treedef: Any, jaxpr: Any) -> Path | None:
        """The file of a traced program; None without a store, or for a program that
        must not be stored: it calls back into this process's Python functions, or its
        text holds a memory address (a program of this process only)."""
        if self._directory is None:
            return None
        program_text, consts = str(jaxpr), jaxpr.consts
        if _CALLBACK_MARK in program_text or _ADDRESS_MARK in program_text:
            return None
        digest = xxhash.xxh3_128()
        for part in (program_text, str(treedef), environment()):
            digest.update(part.encode())
            digest.update(b"\x00")
        for const in consts:
            value = np.asarray(const)
            digest.update(f"{value.dtype}{value.shape}".encode())
            digest.update(np.ascontiguousarray(value).tobytes())
        return self._directory / f"{digest.hexdigest()}.xla"


def stored_program(jitted: Callable, key: Hashable | None) -> StoredProgram:
    """``jitted`` compiled with nlsq's compiler options, its executables kept on disk
    where the store is in use (nlsq's own persistent cache directory, a program with a
    cache key)."""
    return StoredProgram(jitted, None if key is None else executable_store_dir())


def load_executable(path: Path) -> Callable | None:
    """The executable stored at ``path``, or None (absent, or unreadable: compiled anew)."""
    from jax.experimental.serialize_executable import deserialize_and_load

    try:
        with open(path, "rb") as file:
            payload, in_tree, out_tree = pickle.load(file)
        _prepare_lapack()
        return deserialize_and_load(payload, in_tree, out_tree)
    except FileNotFoundError:
        return None
    except Exception as error:  # noqa: BLE001 - any bad entry is compiled again
        logger.debug("stored program %s not loaded (%s); compiling it", path.name, error)
        return None


@functools.cache
def _prepare_lapack() -> None:
    """Load the LAPACK kernels that compiled programs call: lowering a factorisation
    does it, and a loaded executable was never lowered in this process."""
    from jaxlib import lapack

    lapack.prepare_lapack_call("geqrf", np.float64)


def store_executable(path: Path, executable: Any) -> None:
    """Write ``executable`` to ``path`` atomically; a failure only costs the next start."""
    from jax.experimental.serialize_executable import serialize

    try:
        payload = pickle.dumps(serialize(executable))
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(handle, "wb") as file:
            file.write(payload)
        os.replace(temporary, path)
    except Exception as error:  # noqa: BLE001 - the fit has its executable already
        logger.debug("program not stored at %s (%s)", path, error)


def environment() -> str:
    """Digest of what besides the traced program decides its executable: the
    installation (read once) and JAX's configuration now."""
    settings = sorted((name, repr(value)) for name, value in jax.config.values.items())
    parts = (_installation(), os.environ.get("XLA_FLAGS", ""), repr(settings))
    return xxhash.xxh3_128_hexdigest(repr(parts).encode())


@functools.cache
def _installation() -> tuple:
    """nlsq's source, the JAX and jaxlib versions, the backend and the CPU."""
    import jaxlib

    device = jax.devices()[0]
    return (
        _source_digest(),
        jax.__version__,
        jaxlib.__version__,
        device.client.platform,
        device.client.platform_version,
        device.device_kind,
        _cpu_identity(),
    )


def _source_digest() -> str:
    """Digest of nlsq's own source files: a changed solver is another program."""
    package = Path(__file__).resolve().parents[1]
    digest = xxhash.xxh3_128()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _cpu_identity() -> str:
    """The CPU model and instruction-set flags: XLA:CPU compiles for the host CPU."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as file:
            lines = [line for line in file if line.startswith(("model name", "flags"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return f"{platform.machine()} {platform.processor()}"
