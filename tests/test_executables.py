"""Compiled executables kept per input signature and on disk (nlsq.program.executables).

The disk directory is injected, so each case runs in this process: a second
``ExecutableProgram`` with the same key stands for a later process.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from nlsq.cache import track_compiles
from nlsq.program.executables import ExecutableProgram


def _jitted():
    def program(values, data, scale):
        return jnp.sum(values) * data[0] * scale, data[1]

    return jax.jit(program, static_argnames="scale")


def _args(n: int = 5):
    return np.arange(3.0), (np.linspace(0.0, 1.0, n), np.ones(n))


def _run(program: ExecutableProgram, n: int = 5, scale: float = 2.0):
    with jax.enable_x64(True), track_compiles() as call:
        outputs = jax.device_get(program(*_args(n), scale=scale))
    return outputs, call


def _files(directory: Path) -> list[Path]:
    return sorted((directory / "executables").glob("*.exe"))


def test_one_compile_per_input_signature(tmp_path: Path) -> None:
    program = ExecutableProgram(_jitted(), "key", lambda: tmp_path)
    (first, _), call = _run(program)
    np.testing.assert_allclose(first, 3.0 * np.linspace(0.0, 1.0, 5) * 2.0)
    assert call.compiles + call.disk_hits == 1
    _, again = _run(program)
    assert again.compiles == 0 and again.disk_hits == 0
    _, other_shape = _run(program, n=7)
    _, other_static = _run(program, scale=3.0)
    assert other_shape.compiles + other_shape.disk_hits == 1
    assert other_static.compiles + other_static.disk_hits == 1
    assert len(_files(tmp_path)) == 3


def test_a_stored_executable_is_loaded_with_equal_results(tmp_path: Path) -> None:
    (written, ones), _ = _run(ExecutableProgram(_jitted(), "key", lambda: tmp_path))
    (loaded, ones_again), call = _run(ExecutableProgram(_jitted(), "key", lambda: tmp_path))
    assert call.compiles == 0 and call.disk_hits == 1
    np.testing.assert_array_equal(loaded, written)
    np.testing.assert_array_equal(ones_again, ones)


def test_another_key_does_not_load_it(tmp_path: Path) -> None:
    _run(ExecutableProgram(_jitted(), "key", lambda: tmp_path))
    _run(ExecutableProgram(_jitted(), "other key", lambda: tmp_path))
    # Its executable was made (compiled, or taken from JAX's own cache) and stored apart.
    assert len(_files(tmp_path)) == 2


def test_an_unreadable_file_is_compiled_again_and_replaced(tmp_path: Path) -> None:
    (written, _), _ = _run(ExecutableProgram(_jitted(), "key", lambda: tmp_path))
    (path,) = _files(tmp_path)
    path.write_bytes(b"not an executable" * 10)
    (again, _), call = _run(ExecutableProgram(_jitted(), "key", lambda: tmp_path))
    np.testing.assert_array_equal(again, written)
    assert path.read_bytes() != b"not an executable" * 10
    (loaded, _), call = _run(ExecutableProgram(_jitted(), "key", lambda: tmp_path))
    assert call.disk_hits == 1
    np.testing.assert_array_equal(loaded, written)


def test_no_key_or_no_directory_writes_nothing(tmp_path: Path) -> None:
    _run(ExecutableProgram(_jitted(), None, lambda: tmp_path))
    _run(ExecutableProgram(_jitted(), "key", lambda: None))
    assert _files(tmp_path) == []
