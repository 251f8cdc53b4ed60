"""ftol / xtol tests and status messages of nlsq.solvers.termination."""

from __future__ import annotations

import importlib

import jax
import numpy as np
import pytest
import scipy.optimize._lsq.common as scipy_common

from nlsq.solvers import termination
from nlsq.solvers.termination import RUNNING, TERMINATION_MESSAGES

# ``scipy.optimize._lsq.least_squares`` is shadowed by the function of that name.
scipy_least_squares = importlib.import_module("scipy.optimize._lsq.least_squares")

check_termination = jax.jit(termination.check_termination)


pytestmark = pytest.mark.usefixtures("x64")


def status(dF, F, dx_norm, x_norm, ratio, ftol=1e-8, xtol=1e-8) -> int:
    return int(check_termination(dF, F, dx_norm, x_norm, ratio, ftol, xtol))


# F = 1 and x_norm = 1: ftol holds for dF < 1e-8, xtol for dx_norm < 1e-8 * (1 + 1e-8).
@pytest.mark.parametrize(
    ("dF", "dx_norm", "ratio", "expected"),
    [
        (1e-10, 1e-10, 0.5, 4),  # both
        (1e-10, 1.0, 0.5, 2),  # ftol only
        (1.0, 1e-10, 0.5, 3),  # xtol only
        (1.0, 1.0, 0.5, RUNNING),  # neither
        (1e-10, 1e-10, 0.25, 3),  # ftol needs ratio > 0.25 (strict): 4 falls back to 3
        (1e-10, 1.0, 0.25, RUNNING),  # ... and 2 to still running
        (1e-10, 1.0, 0.2500001, 2),
        (1e-10, 1.0, -1.0, RUNNING),
        (1e-8, 1.0, 0.5, RUNNING),  # dF < ftol * F is strict
        (1.0, 1e-8 * (1e-8 + 1.0), 0.5, RUNNING),  # dx_norm < xtol * (xtol + x_norm) too
        (-1.0, 1.0, 0.5, 2),  # a cost increase passes the dF test (ratio guards it)
    ],
)
def test_check_termination_precedence(dF, dx_norm, ratio, expected):
    assert status(dF, 1.0, dx_norm, 1.0, ratio) == expected


def test_xtol_is_relative_to_x_norm_plus_xtol():
    # 1e-3 * (1e-3 + 100) = 0.100001
    assert status(1.0, 1.0, 0.1, 100.0, 0.5, xtol=1e-3) == 3
    assert status(1.0, 1.0, 0.1000011, 100.0, 0.5, xtol=1e-3) == RUNNING
    # x = 0: the threshold is xtol**2
    assert status(1.0, 1.0, 0.9e-6, 0.0, 0.5, xtol=1e-3) == 3
    assert status(1.0, 1.0, 1.1e-6, 0.0, 0.5, xtol=1e-3) == RUNNING


def test_zero_tolerances_disable_the_tests():
    assert status(0.0, 1.0, 0.0, 1.0, 0.5, ftol=0.0, xtol=0.0) == RUNNING


def test_running_is_not_a_scipy_status():
    assert RUNNING not in TERMINATION_MESSAGES
    assert RUNNING not in (-2, -1, 0, 1, 2, 3, 4)
    assert int(termination.check_termination(1.0, 1.0, 1.0, 1.0, 0.5, 1e-8, 1e-8)) == RUNNING


def test_messages_match_scipy():
    assert TERMINATION_MESSAGES == scipy_least_squares.TERMINATION_MESSAGES


def test_check_termination_matches_scipy():
    rng = np.random.default_rng(0)
    for _ in range(200):
        F = rng.uniform(0.0, 10.0)
        x_norm = rng.uniform(0.0, 10.0)
        ftol, xtol = rng.choice([0.0, 1e-8, 1e-3, 0.1], 2)
        dF = F * ftol * rng.uniform(0.0, 2.0) * rng.choice([1.0, -1.0])
        dx_norm = xtol * (xtol + x_norm) * rng.uniform(0.0, 2.0)
        ratio = rng.uniform(-0.5, 1.5)
        expected = scipy_common.check_termination(dF, F, dx_norm, x_norm, ratio, ftol, xtol)
        expected = RUNNING if expected is None else expected
        assert status(dF, F, dx_norm, x_norm, ratio, ftol, xtol) == expected
