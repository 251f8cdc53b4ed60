"""Checks of the NIST StRD data files, the parser and the hand-written models (no solver)."""

from __future__ import annotations

import inspect
import re
from collections import Counter

import jax
import numpy as np
import pytest
from nist import NAMES, NistProblem, load, load_all


def _rss(problem: NistProblem, params: np.ndarray) -> float:
    with jax.enable_x64(True):
        residual = problem.y - np.asarray(problem.model(problem.x, *params))
    return float(residual @ residual)


def _formula_as_numpy(problem: NistProblem, params: np.ndarray) -> np.ndarray:
    """Evaluate the formula text from the file header with NumPy, independently of the model."""
    # Keep only the right-hand side of the "y = ..." (or "log[y] = ...") equation.
    rhs = re.search(r"(?:^|\s)(?:y|log\[y\])\s*=(.*)\+\s*e$", problem.formula).group(1)
    expression = rhs.replace("[", "(").replace("]", ")")
    namespace = {"exp": np.exp, "cos": np.cos, "sin": np.sin, "arctan": np.arctan, "pi": np.pi}
    namespace |= {f"b{i + 1}": value for i, value in enumerate(params)}
    if problem.x.ndim == 1:
        namespace["x"] = problem.x
    else:
        namespace |= {f"x{i + 1}": row for i, row in enumerate(problem.x)}
    return eval(expression, {"__builtins__": {}}, namespace)


def test_all_27_problems_load() -> None:
    problems = load_all()
    assert [p.name for p in problems] == list(NAMES)
    assert len(problems) == 27
    assert Counter(p.difficulty for p in problems) == {"Lower": 8, "Average": 11, "Higher": 8}


@pytest.mark.parametrize("name", NAMES)
def test_parsed_shapes(name: str) -> None:
    problem = load(name)
    n, m = problem.n_params, problem.n_obs
    for array in (problem.start1, problem.start2, problem.certified_params):
        assert array.shape == (n,) and array.dtype == np.float64
    assert problem.certified_stderr.shape == (n,)
    assert np.all(problem.certified_stderr > 0)
    assert problem.y.shape == (m,) and problem.y.dtype == np.float64
    assert problem.x.shape[-1] == m and problem.x.dtype == np.float64
    assert problem.x.ndim == (2 if name == "Nelson" else 1)
    # The model takes exactly the parameters b1..bn named in the header formula.
    assert len(inspect.signature(problem.model).parameters) == n + 1
    assert set(re.findall(r"\bb\d+\b", problem.formula)) == {f"b{i + 1}" for i in range(n)}


@pytest.mark.parametrize("name", NAMES)
def test_model_matches_header_formula(name: str) -> None:
    problem = load(name)
    for params in (problem.start1, problem.start2, problem.certified_params):
        expected = _formula_as_numpy(problem, params)
        with jax.enable_x64(True):
            actual = np.asarray(problem.model(problem.x, *params))
        np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_model_reproduces_certified_rss(name: str) -> None:
    problem = load(name)
    rss = _rss(problem, problem.certified_params)
    # The certified parameters are printed with 11 significant digits; that rounding alone
    # perturbs each residual by up to ~1e-10 * |y|.  This matters only for Lanczos1, whose
    # certified RSS (1.4e-25) is below that floor.
    rounding_floor = problem.n_obs * (1e-10 * np.max(np.abs(problem.y))) ** 2
    assert abs(rss - problem.certified_rss) <= 1e-6 * problem.certified_rss + rounding_floor, (
        f"{name}: RSS at certified parameters {rss:.10e} != certified {problem.certified_rss:.10e}"
    )
