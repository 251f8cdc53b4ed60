"""Model identity (:func:`nlsq.identity.model_key`): when two callables share a program.

Two models must get the same key exactly when compiling either gives the same program:
same code, same captured values, same values of the module-level names the code reads.
A key that is too coarse silently fits the wrong model (a cached program with another
constant baked in), so the fits below check the numbers against scipy, not just keys.
"""

from __future__ import annotations

import functools
import sys
import types

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as so

import nlsq
from nlsq.identity import model_key

POPT_RTOL = 1e-8
PCOV_RTOL = 1e-6

#: Read by :func:`_global_scaled`; the tests change it with monkeypatch.
SCALE = 2.0


#: Settings that change what these tests count; the disk-cache ones are left alone (the
#: process-wide persistent cache is configured once, by whichever fit comes first).


def _global_scaled(x, a):
    return a * SCALE * x


def _helper(x, b):
    return jnp.exp(-b * x)


def _uses_helper(x, a, b):
    return a * _helper(x, b)


def _make_offset_decay(xp, c):
    """``a * exp(-b x) + c`` with ``c`` captured, and its Jacobian, in ``xp``."""

    def f(x, a, b):
        return a * xp.exp(-b * x) + c

    def jac(x, a, b):
        e = xp.exp(-b * x)
        return xp.stack([e, -a * x * e], axis=1)

    return f, jac


def _make_sine(xp, w):
    """``a sin(w[0] x) + b cos(w[1] x)`` with the array ``w`` captured."""

    def f(x, a, b):
        return a * xp.sin(w[0] * x) + b * xp.cos(w[1] * x)

    def jac(x, a, b):
        return xp.stack([xp.sin(w[0] * x), xp.cos(w[1] * x)], axis=1)

    return f, jac


def _assert_matches_scipy(model_factory, constant, x, y, p0) -> np.ndarray:
    """Fit with nlsq (jax twin) and scipy trf (numpy twin, analytic jac); compare."""
    jax_f, _ = model_factory(jnp, constant)
    np_f, np_jac = model_factory(np, constant)
    popt, pcov = nlsq.curve_fit(jax_f, x, y, p0=p0)
    popt_ref, pcov_ref = so.curve_fit(np_f, x, y, p0=p0, jac=np_jac, method="trf")
    np.testing.assert_allclose(popt, popt_ref, rtol=POPT_RTOL)
    np.testing.assert_allclose(pcov, pcov_ref, rtol=PCOV_RTOL)
    return popt


# --------------------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------------------


def test_same_function_object_same_key() -> None:
    assert model_key(_uses_helper) == model_key(_uses_helper)


def test_new_lambda_with_identical_code_same_key() -> None:
    keys = {model_key(lambda x, a, b: a * jnp.exp(-b * x)) for _ in range(3)}
    assert len(keys) == 1
    # Two lambdas written separately (distinct code objects, equal bytecode).
    first = lambda x, a: a * x  # noqa: E731
    second = lambda x, a: a * x  # noqa: E731
    assert first.__code__ is not second.__code__
    assert model_key(first) == model_key(second)


def test_different_code_different_key() -> None:
    assert model_key(lambda x, a: a * x) != model_key(lambda x, a: a + x)
    assert model_key(lambda x, a: a * x) != model_key(lambda x, a: a * x * 2.0)


def test_closures_over_equal_constants_share_a_key() -> None:
    f1, _ = _make_offset_decay(jnp, 0.5)
    f2, _ = _make_offset_decay(jnp, 0.5)
    assert f1 is not f2
    assert model_key(f1) == model_key(f2)
    g1, _ = _make_sine(jnp, np.array([1.0, 2.0]))
    g2, _ = _make_sine(jnp, np.array([1.0, 2.0]))
    assert model_key(g1) == model_key(g2)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (0.5, 2.0),
        (np.array([1.0, 2.0]), np.array([1.0, 3.0])),
        (np.array([1.0, 2.0]), np.array([1.0, 2.0], dtype=np.float32)),
        (np.array([1.0, 2.0]), np.array([[1.0, 2.0]])),
        (jnp.array([1.0, 2.0]), jnp.array([1.0, 2.5])),
        ((1.0, 2.0), (1.0, 2.5)),
        ({"k": 1.0}, {"k": 2.0}),
    ],
    ids=["float", "array", "array-dtype", "array-shape", "jax-array", "tuple", "dict"],
)
def test_closures_over_different_constants_differ(first, second) -> None:
    def make(c):
        return lambda x, a: a * x + c  # never called: only the key is computed

    assert model_key(make(first)) != model_key(make(second))
    assert model_key(make(first)) == model_key(make(first))


def test_in_place_change_of_a_captured_array_changes_the_key() -> None:
    w = np.array([1.0, 2.0])
    f, _ = _make_sine(jnp, w)
    before = model_key(f)
    w[1] = 3.0
    assert model_key(f) != before


def test_defaults_are_part_of_the_key() -> None:
    def make(k):
        def f(x, a, *, k=k):
            return a * x**k

        return f

    assert model_key(make(2)) != model_key(make(3))
    assert model_key(make(2)) == model_key(make(2))


def test_changed_module_constant_changes_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    before = model_key(_global_scaled)
    monkeypatch.setattr(sys.modules[__name__], "SCALE", 3.0)
    after = model_key(_global_scaled)
    assert before != after
    monkeypatch.setattr(sys.modules[__name__], "SCALE", 2.0)
    assert model_key(_global_scaled) == before


def test_partials_with_different_bound_values_differ() -> None:
    def f(x, a, c):
        return a * x + c

    p1 = functools.partial(f, c=1.0)
    p2 = functools.partial(f, c=2.0)
    assert model_key(p1) != model_key(p2)
    assert model_key(p1) == model_key(functools.partial(f, c=1.0))
    # Positional and keyword bindings are different programs.
    assert model_key(functools.partial(f, 1.0)) != model_key(p1)


class _Model:
    def __init__(self, scale: float) -> None:
        self.scale = scale

    def f(self, x, a):
        return a * self.scale * x


def test_bound_methods_of_two_instances_differ() -> None:
    one, two = _Model(1.0), _Model(1.0)
    assert model_key(one.f) != model_key(two.f)
    # A fresh bound-method object of the same instance is the same model.
    assert one.f is not one.f
    assert model_key(one.f) == model_key(one.f)


def test_nested_functions_are_fingerprinted_through() -> None:
    # A helper read as a global is part of the key: its code...
    before = model_key(_uses_helper)
    assert model_key(_uses_helper) == before

    # ...and the constants captured by an inner closure.
    def outer(c):
        def inner(x, b):
            return jnp.exp(-b * x) + c

        def model(x, a, b):
            return a * inner(x, b)

        return model

    assert model_key(outer(1.0)) == model_key(outer(1.0))
    assert model_key(outer(1.0)) != model_key(outer(2.0))

    def deeper(c):
        def level3(x):
            return x + c

        def level2(x):
            return level3(x) * 2

        def level1(x, a):
            return a * level2(x)

        return level1

    assert model_key(deeper(1.0)) != model_key(deeper(2.0))


def test_nested_global_helper_change_changes_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    before = model_key(_uses_helper)
    monkeypatch.setattr(sys.modules[__name__], "_helper", lambda x, b: jnp.exp(-b * x) + 1.0)
    assert model_key(_uses_helper) != before


def test_self_referencing_closure_does_not_recurse_forever() -> None:
    def make(c):
        def f(x, a, depth=0):
            # Refers to itself through its own closure cell.
            return a * x + c if depth else f(x, a, depth=1)

        return f

    f = make(1.0)
    key = model_key(f)
    assert key == model_key(f)
    assert isinstance(key, str) and len(key) == 32


def test_mutually_referencing_containers_do_not_recurse_forever() -> None:
    loop: list = [1.0]
    loop.append(loop)
    table: dict = {"self": None}
    table["self"] = table

    f = lambda x, a: a * x + loop[0] + len(table)  # noqa: E731
    assert model_key(f) == model_key(f)


def test_deep_nesting_is_bounded() -> None:
    value: object = 1.0
    for _ in range(50):
        value = [value]
    f = lambda x, a: a * x  # noqa: E731
    g = lambda x, a: a * x + len(value)  # noqa: E731
    assert model_key(g) == model_key(g)
    assert model_key(f) != model_key(g)


# --------------------------------------------------------------------------------------
# Through the fit: distinct keys give distinct, correct results
# --------------------------------------------------------------------------------------


def _decay_data(m: int = 64):
    rng = np.random.default_rng(3)
    x = np.linspace(0, 4, m)
    y = 2.0 * np.exp(-0.8 * x) + 1.0 + 0.01 * rng.standard_normal(m)
    return x, y


def test_closures_over_different_floats_fit_correctly() -> None:
    x, y = _decay_data()
    # Offsets 1.0 and 0.0: the fitted amplitude/rate differ, each must match scipy.
    p_one = _assert_matches_scipy(_make_offset_decay, 1.0, x, y, p0=[1.0, 1.0])
    p_zero = _assert_matches_scipy(_make_offset_decay, 0.0, x, y, p0=[1.0, 1.0])
    assert not np.allclose(p_one, p_zero, rtol=1e-3)
    np.testing.assert_allclose(p_one, [2.0, 0.8], rtol=0.05)


def test_closures_over_different_arrays_fit_correctly() -> None:
    rng = np.random.default_rng(4)
    x = np.linspace(0, 6, 64)
    y = 1.5 * np.sin(1.0 * x) - 0.5 * np.cos(2.0 * x) + 0.01 * rng.standard_normal(64)
    p_a = _assert_matches_scipy(_make_sine, np.array([1.0, 2.0]), x, y, p0=[1.0, 1.0])
    p_b = _assert_matches_scipy(_make_sine, np.array([1.0, 3.0]), x, y, p0=[1.0, 1.0])
    np.testing.assert_allclose(p_a, [1.5, -0.5], rtol=0.05)
    assert not np.allclose(p_a, p_b, rtol=1e-3)


def test_changed_module_constant_is_seen_by_the_next_fit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    x = np.linspace(0, 1, 16)
    y = 6.0 * x
    popt, _ = nlsq.curve_fit(_global_scaled, x, y, p0=[1.0])
    np.testing.assert_allclose(popt, [3.0], rtol=1e-10)  # SCALE = 2
    monkeypatch.setattr(sys.modules[__name__], "SCALE", 3.0)
    popt, _ = nlsq.curve_fit(_global_scaled, x, y, p0=[1.0])
    np.testing.assert_allclose(popt, [2.0], rtol=1e-10)  # SCALE = 3, not a stale program


class _Scaled:
    def __init__(self, k: float) -> None:
        self.k = k

    def model(self, x, a):
        return a * self.k * x


def test_instance_data_attributes_are_part_of_a_bound_method_key() -> None:
    instance = _Scaled(2.0)
    before = model_key(instance.model)
    instance.k = 3.0
    assert model_key(instance.model) != before


def test_changed_instance_attribute_refits_with_the_new_value() -> None:
    x = np.linspace(0, 1, 16)
    instance = _Scaled(2.0)
    popt_two, _ = nlsq.curve_fit(instance.model, x, 6 * x, p0=[1.0])
    instance.k = 3.0
    popt_three, _ = nlsq.curve_fit(instance.model, x, 6 * x, p0=[1.0])
    np.testing.assert_allclose([popt_two[0], popt_three[0]], [3.0, 2.0], rtol=1e-10)


def test_module_data_attribute_read_by_the_model_is_part_of_its_key() -> None:
    settings = types.ModuleType("nlsq_test_settings")
    settings.K = 2.0

    def model(x, a):
        return a * settings.K * x

    before = model_key(model)
    settings.K = 3.0
    assert model_key(model) != before


def test_names_that_warn_on_a_module_do_not_break_the_key() -> None:
    # ``np.str`` warns (FutureWarning) under NumPy 2; a model that uses the builtin ``str``
    # and refers to ``np`` reads the name ``str`` from both, and the suite turns warnings
    # into errors.
    def model(x, a):
        label = str(a)
        del label
        return np.exp(-a * x)

    assert model_key(model) == model_key(model)


# --------------------------------------------------------------------------------------
# A remembered key is reused only while every value it was made from is unchanged
# --------------------------------------------------------------------------------------


def _fresh_key(model) -> str:
    """The key hashed from scratch (a copy of the function is not remembered yet)."""
    copy = types.FunctionType(
        model.__code__, model.__globals__, model.__name__, model.__defaults__, model.__closure__
    )
    copy.__kwdefaults__ = model.__kwdefaults__
    copy.__qualname__ = model.__qualname__
    return model_key(copy)


class _Settings:
    def __init__(self) -> None:
        self.k = 2.0


_SETTINGS = _Settings()


def _reads_instance(x, a):
    return a * _SETTINGS.k * x


def _change(case: str, monkeypatch: pytest.MonkeyPatch):
    """A model whose key is remembered, and a change to one value it reads."""
    this = sys.modules[__name__]
    if case == "global":
        return _global_scaled, lambda: monkeypatch.setattr(this, "SCALE", 3.0)
    if case == "nested helper":
        replacement = lambda x, b: jnp.exp(-b * x) + 1.0  # noqa: E731
        return _uses_helper, lambda: monkeypatch.setattr(this, "_helper", replacement)
    if case == "instance attribute":
        return _reads_instance, lambda: monkeypatch.setattr(_SETTINGS, "k", 3.0)
    if case == "new instance attribute":
        return _reads_instance, lambda: monkeypatch.setattr(_SETTINGS, "extra", 1.0, False)
    if case == "module function":
        helpers = types.ModuleType("nlsq_test_helpers")
        helpers.g = lambda x: x
        model = lambda x, a: a * helpers.g(x)  # noqa: E731
        return model, lambda: setattr(helpers, "g", lambda x: 2 * x)
    if case == "module attribute":
        settings = types.ModuleType("nlsq_test_settings")
        settings.K = 2.0
        return (lambda x, a: a * settings.K * x), lambda: setattr(settings, "K", 3.0)
    c = 1.0

    def closure(x, a, k=2):
        return a * x**k + c

    if case == "closure cell":

        def rebind():
            nonlocal c
            c = 2.0

        return closure, rebind
    if case == "defaults":
        return closure, lambda: setattr(closure, "__defaults__", (3,))

    def other(x, a, k=2):
        return a * x**k - c

    if case == "code":
        return closure, lambda: setattr(closure, "__code__", other.__code__)
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    [
        "global",
        "nested helper",
        "instance attribute",
        "new instance attribute",
        "module attribute",
        "module function",
        "closure cell",
        "defaults",
        "code",
    ],
)
def test_a_remembered_key_follows_every_change(case, monkeypatch: pytest.MonkeyPatch) -> None:
    model, change = _change(case, monkeypatch)
    before = model_key(model)
    assert model_key(model) == before == _fresh_key(model)
    change()
    after = model_key(model)
    assert after == _fresh_key(model)
    assert after != before


def test_a_captured_array_is_hashed_on_every_call() -> None:
    w = np.array([1.0, 2.0])
    f, _ = _make_sine(jnp, w)
    keys = [model_key(f)]
    for value in (3.0, 4.0):
        w[1] = value
        keys.append(model_key(f))
    assert len(set(keys)) == 3


def test_an_unchanged_function_is_not_hashed_again(monkeypatch: pytest.MonkeyPatch) -> None:
    import nlsq.identity as identity

    hashes = []
    real = identity.xxhash

    def counting_hash():
        hashes.append(1)
        return real.xxh3_128()

    def model(x, a, b):
        return a * jnp.exp(-b * x) + SCALE

    monkeypatch.setattr(identity, "xxhash", types.SimpleNamespace(xxh3_128=counting_hash))
    first = model_key(model)
    assert hashes
    hashed = len(hashes)
    assert model_key(model) == first
    assert len(hashes) == hashed
