"""Box-constraint helpers of nlsq.bounds against hand-derived values and scipy's originals."""

from __future__ import annotations

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize._lsq.common as scipy_common
from hypothesis import given, settings
from hypothesis import strategies as st

from nlsq import bounds
from nlsq.bounds import prepare_bounds

# ``scipy.optimize._lsq.least_squares`` is shadowed by the function of that name.
scipy_least_squares = importlib.import_module("scipy.optimize._lsq.least_squares")

INF = np.inf
SETTINGS = settings(max_examples=60, deadline=None, database=None, derandomize=True)


# Compiled once per shape: much faster than op-by-op dispatch, and the solver traces them too.
cl_scaling_vector = jax.jit(bounds.cl_scaling_vector)
find_active_constraints = jax.jit(bounds.find_active_constraints)
in_bounds = jax.jit(bounds.in_bounds)
make_strictly_feasible = jax.jit(bounds.make_strictly_feasible, static_argnums=3)
step_size_to_bound = jax.jit(bounds.step_size_to_bound)


pytestmark = pytest.mark.usefixtures("x64")


def f64(*values) -> np.ndarray:
    return np.array(values, dtype=np.float64)


def random_box(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bounds with some infinite sides and a point inside, some components on a bound."""
    lb = -rng.uniform(0.0, 3.0, n) * 10.0 ** rng.integers(-3, 4, n)
    ub = rng.uniform(0.0, 3.0, n) * 10.0 ** rng.integers(-3, 4, n) + 1e-6
    lb[rng.random(n) < 0.25] = -INF
    ub[rng.random(n) < 0.25] = INF
    lo = np.where(np.isfinite(lb), lb, -5.0)
    hi = np.where(np.isfinite(ub), ub, 5.0)
    x = lo + (hi - lo) * rng.uniform(0.0, 1.0, n)
    snap = rng.random(n)
    x = np.where((snap < 0.2) & np.isfinite(lb), lb, x)
    x = np.where((snap > 0.8) & np.isfinite(ub), ub, x)
    return x, lb, ub


# --- prepare_bounds --------------------------------------------------------------------


def test_prepare_bounds_broadcasts_scalars():
    lb, ub = prepare_bounds((0, INF), 3)
    np.testing.assert_array_equal(lb, [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(ub, [INF, INF, INF])
    assert lb.dtype == ub.dtype == np.float64


def test_prepare_bounds_keeps_arrays_and_mixes_with_scalars():
    lb, ub = prepare_bounds(([-1, 2], 5), 2)
    np.testing.assert_array_equal(lb, [-1.0, 2.0])
    np.testing.assert_array_equal(ub, [5.0, 5.0])
    assert lb.dtype == np.float64


@pytest.mark.parametrize(
    "bounds", [(-INF, INF), (0, 1), ([0, 1, 2], 3), (-1, [4, 5, 6]), ([-3, -2, -1], [1, 2, 3])]
)
def test_prepare_bounds_matches_scipy(bounds):
    for ours, theirs in zip(
        prepare_bounds(bounds, 3), scipy_least_squares.prepare_bounds(bounds, 3), strict=True
    ):
        np.testing.assert_array_equal(ours, theirs)
        assert ours.shape == theirs.shape == (3,)


# --- in_bounds -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "expected"),
    [
        (f64(0.5, 0.5), True),
        (f64(0.0, 1.0), True),  # the box is closed
        (f64(-1e-300, 0.5), False),
        (f64(0.5, np.nextafter(1.0, 2.0)), False),
    ],
)
def test_in_bounds_closed_box(x, expected):
    assert bool(in_bounds(x, f64(0, 0), f64(1, 1))) is expected


def test_in_bounds_infinite_bounds():
    assert bool(in_bounds(f64(-1e308, 1e308), f64(-INF, -INF), f64(INF, INF)))
    assert not bool(in_bounds(f64(-1e308, 2.0), f64(-INF, -INF), f64(INF, 1.0)))


# --- step_size_to_bound ----------------------------------------------------------------


def test_step_size_to_bound_hand_values():
    # t = [max(-1/1, 2/1), max(-1/-2, 2/-2), inf] = [2, 0.5, inf]
    step, hits = step_size_to_bound(f64(0, 0, 0), f64(1, -2, 0), f64(-1, -1, -1), f64(2, 2, 2))
    assert float(step) == 0.5
    np.testing.assert_array_equal(hits, [0, -1, 0])


def test_step_size_to_bound_offset_point():
    # x = [0.5, -0.25]; t = [(1 - 0.5)/0.25, (-1 + 0.25)/-1.5] = [2, 0.5]
    step, hits = step_size_to_bound(f64(0.5, -0.25), f64(0.25, -1.5), f64(-1, -1), f64(1, 1))
    assert float(step) == 0.5
    np.testing.assert_array_equal(hits, [0, -1])


def test_step_size_to_bound_tie_marks_every_component():
    step, hits = step_size_to_bound(f64(0, 0, 0), f64(1, -1, 0.5), f64(-1, -1, -1), f64(1, 1, 1))
    assert float(step) == 1.0
    np.testing.assert_array_equal(hits, [1, -1, 0])


def test_step_size_to_bound_zero_components_never_bind():
    # The component with s = 0 sits on its bound and still does not limit the step.
    step, hits = step_size_to_bound(f64(1, 0), f64(0, 4), f64(-1, -1), f64(1, 1))
    assert float(step) == 0.25
    np.testing.assert_array_equal(hits, [0, 1])


def test_step_size_to_bound_zero_direction():
    step, hits = step_size_to_bound(f64(0, 0), f64(0, 0), f64(-1, -1), f64(1, 1))
    assert float(step) == INF
    np.testing.assert_array_equal(hits, [0, 0])


def test_step_size_to_bound_infinite_bounds():
    # Only the finite upper bound of the second component can be reached.
    step, hits = step_size_to_bound(f64(0, 0), f64(-3, 2), f64(-INF, -INF), f64(INF, 3))
    assert float(step) == 1.5
    np.testing.assert_array_equal(hits, [0, 1])


def test_step_size_to_bound_unreachable_bounds_mark_all_moving_components():
    # Every step is inf, so ``steps == min_step`` holds for every moving component (scipy's rule).
    step, hits = step_size_to_bound(f64(0, 0, 0), f64(-3, 2, 0), f64(-INF, -1, -1), f64(1, INF, 1))
    assert float(step) == INF
    np.testing.assert_array_equal(hits, [-1, 1, 0])


def test_step_size_to_bound_point_on_bound_moving_outward():
    step, hits = step_size_to_bound(f64(1, 0), f64(1, 1), f64(-1, -1), f64(1, 1))
    assert float(step) == 0.0
    np.testing.assert_array_equal(hits, [1, 0])


def test_step_size_to_bound_matches_scipy():
    rng = np.random.default_rng(0)
    for _ in range(100):
        x, lb, ub = random_box(rng, 4)
        s = rng.standard_normal(4) * (rng.random(4) > 0.2)
        with np.errstate(all="ignore"):
            expected_step, expected_hits = scipy_common.step_size_to_bound(x, s, lb, ub)
        step, hits = step_size_to_bound(x, s, lb, ub)
        np.testing.assert_allclose(float(step), expected_step, rtol=1e-15)
        np.testing.assert_array_equal(hits, expected_hits)


# --- find_active_constraints -----------------------------------------------------------


def test_find_active_constraints_exact():
    x = f64(0, 1, 0.5, -1, 2)
    lb, ub = np.zeros(5), np.ones(5)
    np.testing.assert_array_equal(find_active_constraints(x, lb, ub, 0.0), [-1, 1, 0, -1, 1])


def test_find_active_constraints_exact_needs_contact():
    x = f64(np.nextafter(1.0, 2.0), np.nextafter(2.0, 1.0))
    np.testing.assert_array_equal(find_active_constraints(x, f64(1, 1), f64(2, 2), 0.0), [0, 0])


def test_point_moved_off_a_zero_bound_is_not_active_under_jit():
    # scipy moves x = lb = 0 to the subnormal 5e-324, which compiled CPU code flushes to 0
    # (still on the bound); nlsq moves it to the smallest normal number instead.
    lb, ub = f64(0.0, -1.0), f64(1.0, 0.0)
    x = make_strictly_feasible(f64(0.0, 0.0), lb, ub, 0.0)
    tiny = np.finfo(np.float64).tiny
    np.testing.assert_array_equal(np.asarray(x), [tiny, -tiny])
    np.testing.assert_array_equal(find_active_constraints(x, lb, ub, 0.0), [0, 0])


def test_find_active_constraints_exact_infinite_bounds_never_active():
    x = f64(-1e308, 1e308, 0)
    lb, ub = f64(-INF, -INF, -INF), f64(INF, INF, INF)
    np.testing.assert_array_equal(find_active_constraints(x, lb, ub, 0.0), [0, 0, 0])


def test_find_active_constraints_relative():
    rtol = 1e-3
    # threshold = rtol * max(1, |bound|): 1e-3 at 0, 1e-2 at 10, 1 at +-1000.
    x = f64(5e-4, 2e-3, -999.5, 999.5, 9.9995, 5.0)
    lb = f64(0, 0, -1000, -1000, 0, 0)
    ub = f64(10, 10, 1000, 1000, 10, 10)
    np.testing.assert_array_equal(find_active_constraints(x, lb, ub, rtol), [-1, 0, -1, 1, 1, 0])


def test_find_active_constraints_relative_prefers_nearer_bound():
    # Box narrower than the threshold: both bounds are within rtol, the nearer one is active.
    x = f64(0.25, 0.75)
    np.testing.assert_array_equal(find_active_constraints(x, f64(0, 0), f64(1, 1), 1.0), [-1, 1])


def test_find_active_constraints_relative_tie_goes_to_upper():
    np.testing.assert_array_equal(find_active_constraints(f64(0.5), f64(0), f64(1), 1.0), [1])


def test_find_active_constraints_relative_infinite_bounds_never_active():
    x = f64(0, -1e-4, 1e-4)
    lb, ub = f64(-INF, -INF, 0), f64(INF, 0, INF)
    np.testing.assert_array_equal(find_active_constraints(x, lb, ub, 1e-3), [0, 1, -1])


def test_find_active_constraints_eager_and_traced_rtol_agree():
    x, lb, ub = f64(5e-4, 0), f64(0, 0), f64(1, 1)
    np.testing.assert_array_equal(bounds.find_active_constraints(x, lb, ub, 0.0), [0, -1])
    np.testing.assert_array_equal(find_active_constraints(x, lb, ub, 0.0), [0, -1])
    np.testing.assert_array_equal(bounds.find_active_constraints(x, lb, ub, 1e-3), [-1, -1])
    np.testing.assert_array_equal(find_active_constraints(x, lb, ub, 1e-3), [-1, -1])


@SETTINGS
@given(
    x=st.lists(
        st.sampled_from([-2.0, -1.0, -0.999, 0.0, 0.0005, 0.5, 1.0, 3.0]), min_size=4, max_size=4
    ),
    lb=st.lists(st.sampled_from([-INF, -1.0, 0.0]), min_size=4, max_size=4),
    ub=st.lists(st.sampled_from([0.001, 1.0, 1000.0, INF]), min_size=4, max_size=4),
    rtol=st.sampled_from([0.0, 1e-10, 1e-3, 0.5, 1.0]),
)
def test_find_active_constraints_matches_scipy_on_edge_values(x, lb, ub, rtol):
    x, lb, ub = f64(*x), f64(*lb), f64(*ub)
    expected = scipy_common.find_active_constraints(x, lb, ub, rtol=rtol)
    np.testing.assert_array_equal(find_active_constraints(x, lb, ub, rtol), expected)


def test_find_active_constraints_matches_scipy_random():
    rng = np.random.default_rng(1)
    for _ in range(60):
        x, lb, ub = random_box(rng, 5)
        x = x + rng.standard_normal(5) * 1e-4 * (rng.random(5) < 0.5)
        for rtol in (0.0, 1e-10, 1e-4, 0.1):
            expected = scipy_common.find_active_constraints(x, lb, ub, rtol=rtol)
            np.testing.assert_array_equal(find_active_constraints(x, lb, ub, rtol), expected)


# --- make_strictly_feasible ------------------------------------------------------------


def test_make_strictly_feasible_rstep_zero_moves_to_the_next_normal_number():
    x = f64(1, 2, 1.5, 0, -5)
    lb, ub = f64(1, 1, 1, 0, -1), f64(2, 2, 2, 1, 1)
    out = np.asarray(make_strictly_feasible(x, lb, ub, 0.0))
    # A bound of 0 gives the smallest normal number, not scipy's subnormal 5e-324.
    tiny = np.finfo(np.float64).tiny
    expected = f64(1 + 2.0**-52, 2 - 2.0**-52, 1.5, tiny, -1 + 2.0**-53)
    np.testing.assert_array_equal(out, expected)


def test_make_strictly_feasible_rstep_positive():
    rstep = 1e-10
    lb, ub = f64(0, -100, 5, -INF), f64(1, 100, 6, 2)
    on_lower = np.asarray(make_strictly_feasible(f64(0, -100, 5, 0), lb, ub, rstep))
    # lb + rstep * max(1, |lb|)
    np.testing.assert_array_equal(on_lower, [rstep, -100 + rstep * 100, 5 + rstep * 5, 0])
    on_upper = np.asarray(make_strictly_feasible(f64(1, 100, 6, 2), lb, ub, rstep))
    # ub - rstep * max(1, |ub|)
    np.testing.assert_array_equal(
        on_upper, [1 - rstep, 100 - rstep * 100, 6 - rstep * 6, 2 - rstep * 2]
    )


def test_make_strictly_feasible_rstep_positive_moves_points_within_rstep():
    # 0.5e-10 is within rstep of the lower bound, so it is pushed to exactly rstep.
    out = make_strictly_feasible(f64(0.5e-10, 0.5), f64(0, 0), f64(1, 1), 1e-10)
    np.testing.assert_array_equal(out, [1e-10, 0.5])


def test_make_strictly_feasible_tight_box_goes_to_midpoint():
    # The shifted point 1e-10 would leave [0, 1e-11].
    out = make_strictly_feasible(f64(0, 1e-11, 0.5), f64(0, 0, 0), f64(1e-11, 1e-11, 1), 1e-10)
    np.testing.assert_array_equal(out, [5e-12, 5e-12, 0.5])


def test_make_strictly_feasible_rstep_zero_one_ulp_box():
    # nextafter stays inside even when the box is a single ulp wide.
    ub = np.nextafter(1.0, 2.0)
    out = make_strictly_feasible(f64(1.0), f64(1.0), f64(ub), 0.0)
    np.testing.assert_array_equal(out, [ub])


def test_make_strictly_feasible_matches_scipy():
    rng = np.random.default_rng(2)
    for _ in range(60):
        x, lb, ub = random_box(rng, 5)
        for rstep in (0.0, 1e-10, 1e-3):
            expected = scipy_common.make_strictly_feasible(x, lb, ub, rstep=rstep)
            # JAX bounds: see test_make_strictly_feasible_numpy_bounds_do_not_warn.
            out = np.asarray(make_strictly_feasible(x, jnp.asarray(lb), jnp.asarray(ub), rstep))
            np.testing.assert_array_equal(out, expected)
            assert np.all((out >= lb) & (out <= ub))


def test_make_strictly_feasible_numpy_bounds_do_not_warn():
    # scipy takes the midpoint only of the tight components, so it never warns here.
    out = bounds.make_strictly_feasible(f64(0, 0), f64(-INF, 0), f64(INF, 1), 1e-10)
    np.testing.assert_array_equal(out, [0, 1e-10])


# --- cl_scaling_vector -----------------------------------------------------------------


def test_cl_scaling_vector_hand_values():
    x = np.full(6, 0.5)
    g = f64(-1, 1, 0, -1, 1, -2)
    lb = f64(0, 0, 0, -INF, -INF, -3)
    ub = f64(2, 2, 2, INF, INF, INF)
    v, dv = cl_scaling_vector(x, g, lb, ub)
    # g < 0 -> distance to ub (if finite); g > 0 -> distance to lb (if finite); else 1.
    np.testing.assert_array_equal(v, [1.5, 0.5, 1, 1, 1, 1])
    np.testing.assert_array_equal(dv, [-1, 1, 0, 0, 0, 0])


def test_cl_scaling_vector_matches_scipy():
    rng = np.random.default_rng(3)
    for _ in range(60):
        x, lb, ub = random_box(rng, 5)
        g = rng.standard_normal(5) * (rng.random(5) > 0.2)
        expected_v, expected_dv = scipy_common.CL_scaling_vector(x, g, lb, ub)
        v, dv = cl_scaling_vector(x, g, lb, ub)
        np.testing.assert_array_equal(v, expected_v)
        np.testing.assert_array_equal(dv, expected_dv)
        assert np.all(np.asarray(v) >= 0)
        assert np.all(np.asarray(g * dv) >= 0)


def test_bounds_helpers_run_eagerly():
    x, lb, ub = jnp.asarray(f64(0, 0.5)), jnp.asarray(f64(0, 0)), jnp.asarray(f64(1, 1))
    np.testing.assert_array_equal(
        bounds.make_strictly_feasible(x, lb, ub, 0.0), [np.finfo(np.float64).tiny, 0.5]
    )
    np.testing.assert_array_equal(bounds.make_strictly_feasible(x, lb, ub, 0.1), [0.1, 0.5])
    step, hits = bounds.step_size_to_bound(x, f64(1, 1), lb, ub)
    assert float(step) == 0.5
    np.testing.assert_array_equal(hits, [0, 1])
    assert bool(bounds.in_bounds(x, lb, ub))
    v, dv = bounds.cl_scaling_vector(x, f64(1, -1), lb, ub)
    np.testing.assert_array_equal(v, [0, 0.5])
    np.testing.assert_array_equal(dv, [1, -1])
