"""Compiled executables of a program, kept per input signature in memory and on disk.

JAX's persistent compilation cache spares a new process the XLA compile, but not the
tracing and lowering that find the cache entry (a tenth of a second or more for a
solver program). A program whose identity holds across processes (a model
fingerprinted by content, no host callbacks) is therefore also stored here as a
serialized executable, under a key made of that identity, the input signature and
everything the executable depends on (JAX, jaxlib, the backend, the CPU, XLA_FLAGS),
so that a new process loads it without tracing at all.

Files live in ``<disk cache directory>/executables``. Loading one unpickles it; the
directory holds native executables anyway, so it must be as trusted as the user's
own files. A file that cannot be read is ignored and replaced.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import pickle
import platform
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jaxlib
import numpy as np
import xxhash

from nlsq.cache import record_disk_load

logger = logging.getLogger("nlsq")

#: Bumped whenever the file layout changes, so that old files are never misread.
FORMAT = 1


@functools.cache
def _source_digest() -> str:
    """Digest of nlsq's own source: its solvers are part of every executable."""
    package = Path(__file__).resolve().parent.parent
    digest = xxhash.xxh3_128()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@functools.cache
def _machine() -> str:
    """What a compiled executable depends on besides its program and inputs."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            cpu = [line for line in info if line.startswith(("model name", "flags"))][:2]
    except OSError:
        cpu = [platform.processor()]
    devices = jax.devices()
    return repr(
        (
            FORMAT,
            _source_digest(),
            jax.__version__,
            jaxlib.__version__,
            np.__version__,
            devices[0].platform,
            devices[0].device_kind,
            devices[0].client.platform_version,
            len(devices),
            platform.machine(),
            cpu,
        )
    )


#: JAX settings that change neither a program nor how it is compiled.
_IRRELEVANT_SETTINGS = frozenset(
    {
        "jax_compilation_cache_dir",
        "jax_persistent_cache_min_compile_time_secs",
        "jax_persistent_cache_min_entry_size_bytes",
        "jax_log_compiles",
        "jax_explain_cache_misses",
        "jax_logging_level",
        "jax_debug_log_modules",
        "jax_pprint_use_color",
        "jax_traceback_filtering",
        "jax_enable_x64",
    }
)


def _jax_settings() -> str:
    """JAX's settings now: most of them change how programs lower or compile."""
    values = jax.config.values
    return repr(sorted((k, repr(v)) for k, v in values.items() if k not in _IRRELEVANT_SETTINGS))


def input_signature(args: tuple, static: dict[str, Any]) -> tuple:
    """Shapes, dtypes and tree structure of ``args``, with the static arguments.

    This runs on every call: dtypes stay objects (their names cost a lookup each).
    """
    leaves, tree = jax.tree.flatten(args)
    return (
        tree,
        tuple((np.shape(x), getattr(x, "dtype", type(x))) for x in leaves),
        tuple(static.items()),
    )


def _file_name(persistent_key: str, signature: tuple) -> str:
    tree, leaves, static = signature
    shapes = repr((tree, [(shape, str(dtype)) for shape, dtype in leaves], sorted(static)))
    environment = (os.environ.get("XLA_FLAGS", ""), _jax_settings(), _machine())
    material = repr((persistent_key, shapes, environment))
    return xxhash.xxh3_128_hexdigest(material.encode()) + ".exe"


class ExecutableProgram:
    """A jitted program that compiles once per input signature and keeps the result.

    Parameters
    ----------
    jitted : callable
        The ``jax.jit`` function; its keyword arguments are static.
    persistent_key : str or None
        An identity of the program that holds across processes; ``None`` keeps its
        executables in memory only.
    directory : callable
        Returns the disk cache directory, or None when there is none.
    """

    def __init__(
        self,
        jitted: Any,
        persistent_key: str | None,
        directory: Callable[[], Path | None],
    ) -> None:
        self.jitted = jitted
        self._persistent_key = persistent_key
        self._directory = directory
        self._compiled: dict[tuple, Any] = {}
        self._lock = threading.Lock()

    def __call__(self, *args: Any, **static: Any) -> Any:
        signature = input_signature(args, static)
        compiled = self._compiled.get(signature)
        if compiled is None:
            with self._lock:
                compiled = self._compiled.get(signature)
                if compiled is None:
                    outputs, self._compiled[signature] = self._first_run(signature, args, static)
                    return outputs
        return compiled(*args)

    def _path(self, signature: tuple) -> Path | None:
        if self._persistent_key is None:
            return None
        directory = self._directory()
        if directory is None:
            return None
        return directory / "executables" / _file_name(self._persistent_key, signature)

    def _first_run(self, signature: tuple, args: tuple, static: dict[str, Any]) -> tuple:
        """The outputs of a first call with ``signature``, and the executable that gave them.

        A stored executable that fails to run is replaced by a compiled one; a compiled
        one is stored once it has run.
        """
        path = self._path(signature)
        if path is not None:
            loaded = _load(path, args)
            if loaded is not None:
                try:
                    outputs = jax.block_until_ready(loaded(*args))
                except jax.errors.JaxRuntimeError as error:
                    logger.debug("compiling again: stored program %s failed: %s", path, error)
                else:
                    record_disk_load()
                    return outputs, loaded
        compiled = self.jitted.lower(*args, **static).compile()
        outputs = compiled(*args)
        if path is not None:
            _store(path, compiled)
        return outputs, compiled


@functools.cache
def _prepare_lapack() -> None:
    """Set up jaxlib's LAPACK kernels, as lowering a program does.

    A deserialized executable skips the lowering, and its LAPACK calls would run
    uninitialised (a crash) without this.
    """
    import jaxlib.lapack

    jaxlib.lapack.prepare_lapack_call("geqrf", np.float64)


def _load(path: Path, args: tuple) -> Any:
    """The executable stored at ``path``, or None when there is none or it is unusable."""
    from jax.experimental.serialize_executable import deserialize_and_load

    try:
        payload, out_tree = pickle.loads(path.read_bytes())
        if jax.default_backend() == "cpu":
            _prepare_lapack()
        return deserialize_and_load(payload, jax.tree.structure((args, {})), out_tree)
    except FileNotFoundError:
        return None
    except Exception as error:  # noqa: BLE001 - any unreadable entry is recompiled
        logger.debug("ignoring unreadable compiled program %s: %s", path, error)
        return None


def _store(path: Path, compiled: Any) -> None:
    """Write ``compiled`` to ``path`` atomically; a failure only costs the next process."""
    from jax.experimental.serialize_executable import serialize

    try:
        payload, _, out_tree = serialize(compiled)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as handle:
            temporary = handle.name
            handle.write(pickle.dumps((payload, out_tree)))
        os.replace(temporary, path)
    except Exception as error:  # noqa: BLE001 - the fit itself has succeeded
        logger.debug("could not store compiled program %s: %s", path, error)
        with contextlib.suppress(NameError, OSError):
            os.unlink(temporary)
