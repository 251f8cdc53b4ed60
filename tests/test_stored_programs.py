"""Whole compiled programs kept on disk (:mod:`nlsq.program.stored`).

A fresh process with a warm store loads the executable without lowering or compiling
it, and gets the same fit; a damaged entry is compiled again; programs that
call back into Python are never stored. Each process here is a real fresh interpreter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest
import scipy.optimize as so

import nlsq.program.stored as stored

_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np, jax.numpy as jnp
    import nlsq

    lowered = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, duration, **_: lowered.append(event)
        if event == "/jax/core/compile/jaxpr_to_mlir_module_duration" else None
    )

    def model(x, a, b):
        return a * jnp.exp(-b * x)

    def host_model(x, a, b):
        return a * np.exp(-b * x)

    x = np.linspace(0, 4, 50)
    y = 2.5 * np.exp(-1.3 * x) + 0.01 * np.sin(7 * x)
    f = host_model if sys.argv[1] == "host" else model
    popt, pcov = nlsq.curve_fit(f, x, y, p0=[1.0, 1.0])
    info = nlsq.cache_info()
    print(json.dumps({
        "popt": popt.tolist(), "pcov": pcov.tolist(), "lowered": len(lowered),
        "compiles": info["total_compiles"], "disk_hits": info["total_disk_hits"],
    }))
    """
)


def _run_fresh(directory: Path, script: str, *args: str) -> dict:
    """Run ``script`` in a fresh interpreter with the disk cache in ``directory``; its
    last line of output, as JSON."""
    env = {**os.environ, "NLSQ_DISK_CACHE_DIR": str(directory)}
    env.pop("NLSQ_DISK_CACHE", None)
    done = subprocess.run(
        [sys.executable, "-B", "-c", script, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _fit_in_fresh_process(directory: Path, model: str = "jax") -> dict:
    return _run_fresh(directory, _SCRIPT, model)


def _scipy_fit() -> np.ndarray:
    x = np.linspace(0, 4, 50)
    y = 2.5 * np.exp(-1.3 * x) + 0.01 * np.sin(7 * x)
    popt, _ = so.curve_fit(lambda x, a, b: a * np.exp(-b * x), x, y, p0=[1.0, 1.0], method="trf")
    return popt


def _stored_files(directory: Path) -> list[Path]:
    return sorted((directory / "executables").glob("*.xla"))


def test_a_warm_start_loads_the_program_without_lowering_it(tmp_path: Path) -> None:
    cold = _fit_in_fresh_process(tmp_path)
    assert (cold["compiles"], cold["disk_hits"]) == (1, 0)
    assert cold["lowered"] > 0
    assert len(_stored_files(tmp_path)) == 1

    warm = _fit_in_fresh_process(tmp_path)
    assert (warm["compiles"], warm["disk_hits"]) == (0, 1)
    assert warm["lowered"] == 0
    # The same executable on the same inputs.
    np.testing.assert_allclose(warm["popt"], cold["popt"], rtol=1e-13)
    np.testing.assert_allclose(warm["pcov"], cold["pcov"], rtol=1e-12)
    np.testing.assert_allclose(warm["popt"], _scipy_fit(), rtol=1e-6)


def test_a_damaged_entry_is_compiled_again_and_replaced(tmp_path: Path) -> None:
    _fit_in_fresh_process(tmp_path)
    (entry,) = _stored_files(tmp_path)
    entry.write_bytes(b"not an executable")

    repaired = _fit_in_fresh_process(tmp_path)
    assert (repaired["compiles"], repaired["disk_hits"]) == (1, 0)
    np.testing.assert_allclose(repaired["popt"], _scipy_fit(), rtol=1e-6)

    warm = _fit_in_fresh_process(tmp_path)
    assert (warm["compiles"], warm["disk_hits"]) == (0, 1)


def test_a_program_that_calls_back_into_python_is_not_stored(tmp_path: Path) -> None:
    result = _fit_in_fresh_process(tmp_path, model="host")
    np.testing.assert_allclose(result["popt"], _scipy_fit(), rtol=1e-6)
    assert _stored_files(tmp_path) == []


def test_without_a_disk_cache_programs_compile_and_nothing_is_stored(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(stored, "executable_store_dir", lambda: None)
    monkeypatch.setattr(stored, "store_executable", lambda path, executable: pytest.fail())
    jitted = jax.jit(lambda controls, data, padded: controls * data, static_argnames="padded")
    program = stored.stored_program(jitted, ("single", "model", "spec"))
    np.testing.assert_array_equal(program(np.ones(3), np.arange(3.0), padded=False), [0, 1, 2])
    # Inside another transformation the jitted program runs, traced.
    traced = jax.jit(lambda c: program(c, np.arange(3.0), padded=False))(np.ones(3))
    np.testing.assert_array_equal(traced, [0, 1, 2])


def test_a_stored_program_lowers_with_its_static_argument() -> None:
    jitted = jax.jit(
        lambda controls, data, padded: controls * data + (1.0 if padded else 0.0),
        static_argnames="padded",
    )
    program = stored.StoredProgram(jitted, None)
    for padded, expected in ((False, [0, 1, 2]), (True, [1, 2, 3])):
        compiled = program.lower(np.ones(3), np.arange(3.0), padded=padded).compile()
        np.testing.assert_array_equal(compiled(np.ones(3), np.arange(3.0)), expected)


_HELPER_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np, jax.numpy as jnp
    sys.path.insert(0, sys.argv[1])
    import nlsq_test_helpers as helpers
    import nlsq

    def model(x, a, b):
        return a * helpers.shape(x, b)

    x = np.linspace(0, 4, 50)
    y = 2.5 * np.exp(-1.3 * x) + 1.0
    popt, _ = nlsq.curve_fit(model, x, y, p0=[1.0, 1.0])
    info = nlsq.cache_info()
    print(json.dumps({"popt": popt.tolist(), "disk_hits": info["total_disk_hits"]}))
    """
)


def test_an_edited_helper_module_is_a_new_program(tmp_path: Path) -> None:
    # The model reaches its helper through a module attribute, which its identity
    # does not fingerprint: the stored program is keyed on the traced program instead.
    helpers = tmp_path / "nlsq_test_helpers.py"

    def fit(body: str) -> dict:
        helpers.write_text(f"import jax.numpy as jnp\n\ndef shape(x, b):\n    return {body}\n")
        return _run_fresh(tmp_path / "cache", _HELPER_SCRIPT, str(tmp_path))

    x = np.linspace(0, 4, 50)
    y = 2.5 * np.exp(-1.3 * x) + 1.0

    def scipy_fit(shape) -> np.ndarray:
        popt, _ = so.curve_fit(lambda x, a, b: a * shape(x, b), x, y, p0=[1.0, 1.0], method="trf")
        return popt

    plain = fit("jnp.exp(-b * x)")
    np.testing.assert_allclose(plain["popt"], scipy_fit(lambda x, b: np.exp(-b * x)), rtol=1e-6)
    offset = fit("jnp.exp(-b * x) + 1.0")
    assert offset["disk_hits"] == 0
    expected = scipy_fit(lambda x, b: np.exp(-b * x) + 1.0)
    np.testing.assert_allclose(offset["popt"], expected, rtol=1e-6)
    assert not np.allclose(plain["popt"], offset["popt"], rtol=1e-3)
    again = fit("jnp.exp(-b * x) + 1.0")
    assert again["disk_hits"] == 1
    np.testing.assert_allclose(again["popt"], offset["popt"], rtol=1e-13)
