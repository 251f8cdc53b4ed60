"""The compiler options of nlsq's programs (:mod:`nlsq.program.compiler`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as so

import nlsq
from nlsq.program import compiler, stored


def _decay(x, a, b):
    return a * jnp.exp(-b * x)


def _data() -> tuple[np.ndarray, np.ndarray]:
    x = np.linspace(0.0, 4.0, 40)
    y = 2.0 * np.exp(-0.7 * x) + 0.01 * np.random.default_rng(3).standard_normal(40)
    return x, y


@pytest.fixture
def recorded_compiles(monkeypatch) -> list:
    """The options of every ``Lowered.compile`` in the test, with nlsq's programs
    compiled afresh (none from memory, none from the disk store)."""
    original = jax.stages.Lowered.compile
    options: list = []

    def recording_compile(self, compiler_options=None):
        options.append(compiler_options)
        return original(self, compiler_options)

    monkeypatch.setattr(jax.stages.Lowered, "compile", recording_compile)
    monkeypatch.setattr(stored, "executable_store_dir", lambda: None)
    nlsq.clear_cache()
    yield options
    nlsq.clear_cache()


def test_single_batch_and_chunked_programs_compile_with_the_options(
    monkeypatch, recorded_compiles
) -> None:
    monkeypatch.setitem(compiler._accepted, "options", compiler.PROGRAM_COMPILER_OPTIONS)
    x, y = _data()
    nlsq.curve_fit(_decay, x, y, p0=[1.0, 1.0])
    nlsq.curve_fit_batch(_decay, x, np.stack([y, 1.1 * y]), p0=[1.0, 1.0])
    nlsq.curve_fit_large(_decay, x, y, p0=[1.0, 1.0], chunk_size=16)
    assert len(recorded_compiles) == 3
    assert recorded_compiles == [compiler.PROGRAM_COMPILER_OPTIONS] * 3


def test_an_option_this_xla_refuses_is_dropped_and_fits_still_run(
    monkeypatch, recorded_compiles
) -> None:
    refused = {"xla_nlsq_no_such_option": True}
    monkeypatch.setitem(compiler._accepted, "options", refused)
    x, y = _data()
    popt, pcov = nlsq.curve_fit(_decay, x, y, p0=[1.0, 1.0])
    batch = nlsq.curve_fit_batch(_decay, x, np.stack([y, y]), p0=[1.0, 1.0])
    expected, expected_cov = so.curve_fit(lambda x, a, b: a * np.exp(-b * x), x, y, p0=[1.0, 1.0])
    np.testing.assert_allclose(popt, expected, rtol=1e-6)
    np.testing.assert_allclose(pcov, expected_cov, rtol=1e-4)
    np.testing.assert_allclose(batch.popt, [expected, expected], rtol=1e-6)
    # Refused once (by the single fit's program), then never passed again.
    assert recorded_compiles == [refused, None, None]
    assert compiler._accepted["options"] is None


def test_a_program_inside_another_jit_runs_traced() -> None:
    program = compiler.jit_program(lambda a, b: a * b)
    outer = jax.jit(lambda a: program(a, 3.0))
    np.testing.assert_allclose(outer(np.arange(3.0)), [0.0, 3.0, 6.0])
    np.testing.assert_allclose(program(np.arange(3.0), 2.0), [0.0, 2.0, 4.0])
