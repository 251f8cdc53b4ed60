"""Tests for :mod:`nlsq.jacobian`: forward, reverse and automatic Jacobian modes."""

from __future__ import annotations

import logging
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as so

import nlsq
from nlsq import config
from nlsq.errors import TraceTimeInputError
from nlsq.jacobian import (
    JACOBIAN_MODES,
    autodiff_jacobian,
    automatic_mode,
    forward_jacobian,
    resolve_jacobian_mode,
)


@pytest.fixture(autouse=True)
def no_user_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither the user's config file nor their ``NLSQ_*`` variables may steer a test."""
    for setting in config.SETTINGS.values():
        monkeypatch.delenv(setting.env, raising=False)
    monkeypatch.setenv(config.CONFIG_PATH_ENV, str(tmp_path / "absent.json"))


def _messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "nlsq"]


@pytest.fixture
def fresh_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    """No compiled-program cache, so each fit traces its model and logs 'auto's choice.

    (Models are cached by their code, so another test's identical model would otherwise
    hand this one an already-traced program.)
    """
    monkeypatch.setenv("NLSQ_CACHE_ENABLE", "0")


# --------------------------------------------------------------------------------------
# The automatic rule
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "m", "expected"),
    [
        (1, 1, "fwd"),
        (100, 100, "fwd"),
        (2, 1, "rev"),
        (1, 2, "fwd"),
        (3, 100_000, "fwd"),
        (30, 10, "rev"),
        (101, 100, "rev"),
        (1000, 100, "rev"),
        (100, 1000, "fwd"),
    ],
)
def test_automatic_mode(n: int, m: int, expected: str) -> None:
    assert automatic_mode(n, m) == expected


def test_modes() -> None:
    assert JACOBIAN_MODES == ("auto", "fwd", "rev")
    for mode in JACOBIAN_MODES:
        assert resolve_jacobian_mode(mode) == mode
    assert resolve_jacobian_mode(None) == "auto"
    assert resolve_jacobian_mode(" Fwd ") == "fwd"


# --------------------------------------------------------------------------------------
# The modes agree
# --------------------------------------------------------------------------------------

T = np.linspace(0.0, 4.0, 20)


def _exp_decay(x):
    return x[0] * jnp.exp(-x[1] * T) + x[2]


def _exp_decay_jac(x):
    e = np.exp(-x[1] * T)
    return np.stack([e, -x[0] * T * e, np.ones_like(T)], axis=1)


def _sinusoid(x):
    # The sine sits inside a jitted function: its primitive is in a nested jaxpr.
    return x[0] * jax.jit(jnp.sin)(x[1] * T + x[2]) + x[3]


def _sinusoid_jac(x):
    u = x[1] * T + x[2]
    return np.stack([np.sin(u), x[0] * T * np.cos(u), x[0] * np.cos(u), np.ones_like(T)], 1)


RNG = np.random.default_rng(7)
X_WIDE = RNG.standard_normal((10, 30)) / np.sqrt(30)  # m = 10 residuals, n = 30 parameters
Y_WIDE = np.tanh(X_WIDE @ RNG.uniform(-1.0, 1.0, 30))


def _wide(p):
    return jnp.tanh(X_WIDE @ p)


def _wide_jac(p):
    return (1.0 - np.tanh(X_WIDE @ p) ** 2)[:, None] * X_WIDE


@pytest.mark.parametrize("mode", JACOBIAN_MODES)
@pytest.mark.parametrize(
    ("fun", "jac", "x"),
    [
        (_exp_decay, _exp_decay_jac, np.array([2.0, 0.7, -0.3])),
        (_sinusoid, _sinusoid_jac, np.array([1.5, 2.0, 0.3, 0.5])),
        (_wide, _wide_jac, np.linspace(-1.0, 1.0, 30)),
    ],
    ids=["n<m", "n<m-sinusoid", "n>m"],
)
def test_modes_give_the_hand_derived_jacobian(fun, jac, x, mode: str) -> None:
    with jax.enable_x64(True):
        x = jnp.asarray(x)
        m = jax.eval_shape(fun, x).shape[0]
        J = autodiff_jacobian(fun, x, m, mode)(x)
        assert J.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(J), jac(np.asarray(x)), rtol=1e-13, atol=1e-15)


def _decay_residual(x, t, y):
    return x[0] * jnp.exp(-x[1] * t) + x[2] - y


def _sinusoid_residual(x, t, y):
    return x[0] * jnp.sin(x[1] * t + x[2]) + x[3] - y


@pytest.mark.parametrize(
    ("residual", "x", "expected"),
    [
        (_decay_residual, [2.0, 0.7, -0.3], _exp_decay_jac),
        (_sinusoid_residual, [1.5, 2.0, 0.3, 0.5], _sinusoid_jac),
    ],
    ids=["exp", "sin"],
)
def test_forward_jacobian_in_the_first_argument(residual, x, expected) -> None:
    with jax.enable_x64(True):
        x = jnp.asarray(x)
        J = jax.jit(forward_jacobian(residual))(x, jnp.asarray(T), jnp.zeros_like(T))
        assert J.shape == (T.size, x.size)
        np.testing.assert_allclose(np.asarray(J), expected(np.asarray(x)), rtol=1e-13, atol=1e-15)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the column loop is CPU-only")
def test_forward_jacobian_loops_over_columns_only_for_trigonometric_models() -> None:
    """On a CPU, sines and cosines are computed once and the columns looped over."""

    def primitives(fun, x):
        return {eqn.primitive.name for eqn in jax.make_jaxpr(forward_jacobian(fun))(x).eqns}

    with jax.enable_x64(True):
        assert "scan" in primitives(_sinusoid, jnp.array([1.5, 2.0, 0.3, 0.5]))
        assert "scan" not in primitives(_exp_decay, jnp.array([2.0, 0.7, -0.3]))


def test_modes_give_the_same_fit() -> None:
    rng = np.random.default_rng(3)
    y = 2.0 * np.exp(-0.7 * T) - 0.3 + 0.01 * rng.standard_normal(T.size)
    results = {
        mode: nlsq.least_squares(_decay_residual, [1.0, 1.0, 0.0], args=(T, y), jacobian_mode=mode)
        for mode in JACOBIAN_MODES
    }
    reference = results["fwd"]
    assert reference.success
    for mode in ("auto", "rev"):
        result = results[mode]
        np.testing.assert_allclose(result.x, reference.x, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(result.cost, reference.cost, rtol=1e-12)
        assert (result.nfev, result.njev, result.status) == (
            reference.nfev,
            reference.njev,
            reference.status,
        )


def test_curve_fit_accepts_jacobian_mode(caplog) -> None:
    def model(t, a, b):
        return a * jnp.exp(-b * t)

    y = 2.0 * np.exp(-0.7 * T)
    with caplog.at_level(logging.DEBUG, logger="nlsq"):
        popt, _ = nlsq.curve_fit(model, T, y, p0=[1.0, 1.0], jacobian_mode="rev")
    assert "jacobian_mode='rev' (from argument)" in _messages(caplog)
    np.testing.assert_allclose(popt, [2.0, 0.7], rtol=1e-8)


# --------------------------------------------------------------------------------------
# Models with a reverse-mode rule only (jax.custom_vjp)
# --------------------------------------------------------------------------------------


@jax.custom_vjp
def softplus(z):
    return jnp.logaddexp(0.0, z)


def _softplus_fwd(z):
    return softplus(z), z


def _softplus_bwd(z, g):
    return (g * jax.nn.sigmoid(z),)


softplus.defvjp(_softplus_fwd, _softplus_bwd)

T_SP = np.linspace(-3.0, 3.0, 25)
Y_SP = 2.0 * np.logaddexp(0.0, 1.5 * T_SP - 1.0) + 0.02 * np.random.default_rng(5).normal(
    size=T_SP.size
)


def _softplus_residual(x, t, y):
    return x[0] * softplus(x[1] * t + x[2]) - y


def _softplus_residual_np(x):
    return x[0] * np.logaddexp(0.0, x[1] * T_SP + x[2]) - Y_SP


def _softplus_jac_np(x):
    z = x[1] * T_SP + x[2]
    s = 1.0 / (1.0 + np.exp(-z))
    return np.stack([np.logaddexp(0.0, z), x[0] * s * T_SP, x[0] * s], axis=1)


X0_SP = [1.0, 1.0, 0.0]


def test_custom_vjp_model_cannot_go_forward() -> None:
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jacfwd(softplus)(1.0)


@pytest.mark.parametrize("mode", ["auto", "rev"])
def test_custom_vjp_model_fits_like_scipy(mode: str, caplog, fresh_trace) -> None:
    expected = so.least_squares(_softplus_residual_np, X0_SP, jac=_softplus_jac_np, method="trf")
    with caplog.at_level(logging.DEBUG, logger="nlsq"):
        result = nlsq.least_squares(
            _softplus_residual, X0_SP, args=(T_SP, Y_SP), jacobian_mode=mode
        )
    assert expected.success
    np.testing.assert_allclose(result.x, expected.x, rtol=1e-8, atol=1e-8)
    assert (result.nfev, result.status) == (expected.nfev, expected.status)
    np.testing.assert_allclose(result.cost, expected.cost, rtol=1e-8)
    if mode == "auto":
        # n = 3 < m = 25 would choose 'fwd'; the custom_vjp rule forces 'rev'.
        assert any("jacobian_mode='auto' chose 'rev'" in m for m in _messages(caplog))


def test_custom_vjp_model_forced_forward_raises_plain_value_error() -> None:
    with pytest.raises(ValueError) as info:
        nlsq.least_squares(_softplus_residual, X0_SP, args=(T_SP, Y_SP), jacobian_mode="fwd")
    error = info.value
    assert type(error) is ValueError
    assert not hasattr(error, "__notes__")
    message = str(error)
    assert "custom_vjp" in message
    assert "jacobian_mode='rev'" in message


def test_custom_vjp_model_forward_from_env_raises(monkeypatch) -> None:
    monkeypatch.setenv("NLSQ_JACOBIAN_MODE", "fwd")
    with pytest.raises(ValueError, match="custom_vjp"):
        nlsq.least_squares(_softplus_residual, X0_SP, args=(T_SP, Y_SP))


def test_autodiff_jacobian_forward_on_custom_vjp_raises() -> None:
    x = jnp.zeros(3)

    def fun(p):
        return softplus(p * 2.0)

    with pytest.raises(TraceTimeInputError, match="custom_vjp"):
        autodiff_jacobian(fun, x, 3, "fwd")
    J = autodiff_jacobian(fun, x, 3, "auto")(x)
    np.testing.assert_allclose(np.asarray(J), np.eye(3), rtol=1e-6)


# --------------------------------------------------------------------------------------
# What 'auto' chooses, as logged at trace time
# --------------------------------------------------------------------------------------


def _wide_residual(p, X, y):
    return jnp.tanh(X @ p) - y


def _tall_residual(x, t, y):
    return x[0] * jnp.exp(-x[1] * t) - y


def test_auto_chooses_rev_when_more_parameters_than_residuals(caplog, fresh_trace) -> None:
    with caplog.at_level(logging.DEBUG, logger="nlsq"):
        result = nlsq.least_squares(_wide_residual, np.zeros(30), args=(X_WIDE, Y_WIDE))
    messages = _messages(caplog)
    assert "jacobian_mode='auto' (from default)" in messages
    assert "jacobian_mode='auto' chose 'rev' for n=30 parameters, m=10 residuals" in messages
    assert result.cost < 1e-12


def test_auto_chooses_fwd_when_fewer_parameters_than_residuals(caplog, fresh_trace) -> None:
    y = 2.0 * np.exp(-0.7 * T)
    with caplog.at_level(logging.DEBUG, logger="nlsq"):
        nlsq.least_squares(_tall_residual, [1.0, 1.0], args=(T, y), jacobian_mode="auto")
    messages = _messages(caplog)
    assert "jacobian_mode='auto' (from argument)" in messages
    assert "jacobian_mode='auto' chose 'fwd' for n=2 parameters, m=20 residuals" in messages


def test_forced_mode_logs_no_automatic_choice(caplog) -> None:
    with jax.enable_x64(True), caplog.at_level(logging.DEBUG, logger="nlsq"):
        autodiff_jacobian(_exp_decay, jnp.ones(3), 20, "rev")
    assert not any("chose" in m for m in _messages(caplog))


# --------------------------------------------------------------------------------------
# Invalid modes
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["forward", "jacrev", "", 1, True])
def test_invalid_jacobian_mode_raises(bad) -> None:
    with pytest.raises(ValueError, match="jacobian_mode"):
        resolve_jacobian_mode(bad)
    with pytest.raises(ValueError, match="jacobian_mode"):
        nlsq.least_squares(_tall_residual, [1.0, 1.0], args=(T, T), jacobian_mode=bad)


def test_curve_fit_invalid_jacobian_mode_raises() -> None:
    def model(t, a):
        return a * t

    with pytest.raises(ValueError, match="jacobian_mode"):
        nlsq.curve_fit(model, T, T, p0=[1.0], jacobian_mode="sideways")
