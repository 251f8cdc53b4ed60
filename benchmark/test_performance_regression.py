"""Performance regression gate: a fresh run against the committed baseline.

``pytest benchmark/test_performance_regression.py`` measures the quick problems (a few
minutes on two cores), compares them with ``benchmark/baselines/<platform>.json`` and
fails on a cold or hot regression; memory only warns. ``NLSQ_BENCH_PROBLEMS=all`` (or a
comma-separated list of problems or tags) measures more.

It also proves that the gate can fail: a run with nlsq's in-memory program cache disabled
(``NLSQ_CACHE_ENABLE=0``: every call traces and compiles again) must be reported as a
regression. The remaining tests check the gate's decisions on made-up measurements.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

from benchmark import gate, runner
from benchmark.problems import PROBLEMS, dataset, is_accurate, max_error, select

SELECTION = os.environ.get("NLSQ_BENCH_PROBLEMS", "quick")
RESULT_PATH = runner.BENCHMARK_DIR / "results" / "gate-latest.json"


def _print(message: str) -> None:
    print(message, flush=True)


# --- the gate on this checkout -------------------------------------------------------


@pytest.fixture(scope="module")
def gate_run():
    run, findings = gate.run_gate(select(SELECTION), progress=_print)
    runner.save(run, RESULT_PATH)
    _print(gate.format_findings(findings))
    _print(f"verdict: {gate.verdict(findings)}; run saved to {RESULT_PATH}")
    return run, findings


@pytest.mark.timeout(3600)
@pytest.mark.filterwarnings("always::benchmark.gate.PerformanceWarning")
def test_no_performance_regression(gate_run):
    _, findings = gate_run
    for finding in findings:
        if finding.status in gate.WARNING:
            warnings.warn(
                f"{finding.problem} {finding.metric}: {finding.status}: {finding.message}",
                gate.PerformanceWarning,
                stacklevel=1,
            )
    failing = [f for f in findings if f.failing]
    assert not failing, "performance regression:\n" + gate.format_findings(failing)


@pytest.mark.timeout(900)
def test_injected_slowdown_is_reported():
    """Disabling the program cache (every fit compiles again) must fail the comparison."""
    problem = PROBLEMS["exponential-1e3"]
    slow = runner.Target(env={"NLSQ_CACHE_ENABLE": "0"}, label="injected: program cache off")
    settings = runner.Settings(hot_min_repeats=3, hot_max_repeats=20, hot_budget_s=1.0)
    _, findings = gate.run_gate([problem], target=slow, settings=settings, metrics=("hot",))
    _print(gate.format_findings(findings))
    hot = next(f for f in findings if f.metric == "hot")
    assert hot.status == "regression" and hot.change > 1.0, hot
    assert hot.attempts == 1 + gate.Thresholds().retries  # confirmed by re-measuring
    compiles = next(f for f in findings if f.metric == "compiles")
    assert compiles.status == "regression", compiles
    assert gate.verdict(findings) == "regression"


# --- the gate's decisions on made-up measurements -------------------------------------

BASE = {"nlsq_cold": 2.0, "scipy_cold": 0.5, "nlsq_hot": 1e-3, "scipy_hot": 0.7e-3, "rss": 380.0}


def fake_entry(seed: int = 0, jitter: float = 0.01, load: float = 0.0, **scale: float) -> dict:
    """A problem entry with the shape of a real one; ``scale`` multiplies BASE figures."""
    rng = np.random.default_rng(seed)
    fig = {k: v * scale.get(k, 1.0) for k, v in BASE.items()}

    def noisy(value: float, size: int) -> list[float]:
        return list(value * np.exp(jitter * rng.standard_normal(size)))

    def cold(lib: str) -> list[dict]:
        times = noisy(fig[f"{lib}_cold"], 3)
        return [
            {
                "cold_s": t,
                "cold_cpu_s": t,
                "import_s": 0.3 * t,
                "import_cpu_s": 0.3 * t,
                "first_call_s": 0.7 * t,
                "first_call_cpu_s": 0.7 * t,
                "peak_rss_mb": fig["rss"] if lib == "nlsq" else 75.0,
                "rss_after_import_mb": 180.0,
                "compiles": 1,
                "disk_hits": 0,
                "compile_s": 0.5 * t,
                "accurate": True,
                "max_error": 0.004,
                "others_cpus": load,
            }
            for t in times
        ]

    hot_n, hot_s = noisy(fig["nlsq_hot"], 100), noisy(fig["scipy_hot"], 100)
    accuracy = {"accurate": True, "max_error": 0.004, "popt": [2.5, 1.3, 0.5]}
    return {
        "problem": {
            "family": "exponential",
            "n": 1000,
            "n_params": 3,
            "variant": "plain",
            "tags": ["sweep"],
        },
        "cold": [{"nlsq": cold("nlsq"), "scipy": cold("scipy")}],
        "hot": [
            {
                "nlsq_s": hot_n,
                "scipy_s": hot_s,
                "nlsq_cpu_s": hot_n,
                "scipy_cpu_s": hot_s,
                "loop_compiles": scale.get("loop_compiles", 0),
                "others_cpus": load,
                "accuracy": {"nlsq": accuracy, "scipy": accuracy},
            }
        ],
    }


def fake_run(**entries: dict) -> dict:
    return {"problems": entries}


def statuses(findings: list[gate.Finding]) -> dict[str, str]:
    return {f.metric: f.status for f in findings if f.status != "ok" or f.metric != "compiles"}


BASELINE = fake_run(p=fake_entry(seed=1))


def test_slower_machine_is_not_a_regression():
    # Every time doubles, nlsq's and scipy's alike: the ratios do not move.
    slow = {k: 2.0 for k in ("nlsq_cold", "scipy_cold", "nlsq_hot", "scipy_hot")}
    findings = gate.evaluate(fake_run(p=fake_entry(seed=2, **slow)), BASELINE)
    assert gate.verdict(findings) == "no significant change", gate.format_findings(findings)


def test_slower_nlsq_cold_start_is_a_regression():
    findings = gate.evaluate(fake_run(p=fake_entry(seed=2, nlsq_cold=1.25)), BASELINE)
    assert statuses(findings)["cold"] == "regression"
    assert statuses(findings)["hot"] == "ok"
    assert gate.verdict(findings) == "regression"


def test_slower_nlsq_hot_fit_is_a_regression_and_faster_is_an_improvement():
    slower = gate.evaluate(fake_run(p=fake_entry(seed=2, nlsq_hot=1.2)), BASELINE)
    faster = gate.evaluate(fake_run(p=fake_entry(seed=2, nlsq_hot=0.7)), BASELINE)
    assert statuses(slower)["hot"] == "regression"
    assert statuses(faster)["hot"] == "improvement"
    assert gate.verdict(faster) == "improvement"


def test_small_change_is_no_change():
    findings = gate.evaluate(
        fake_run(p=fake_entry(seed=2, nlsq_hot=1.05, nlsq_cold=1.05)), BASELINE
    )
    assert gate.verdict(findings) == "no significant change"


def test_memory_growth_only_warns():
    findings = gate.evaluate(fake_run(p=fake_entry(seed=2, rss=1.3)), BASELINE)
    assert statuses(findings)["memory"] == "warning"
    assert gate.verdict(findings) == "no significant change"


def test_change_within_the_noise_is_not_a_failure():
    # 15% slower, but the repeats scatter by 60%: the gate cannot tell, so it warns.
    noisy = gate.evaluate(fake_run(p=fake_entry(seed=2, jitter=0.6, nlsq_cold=1.15)), BASELINE)
    assert statuses(noisy)["cold"] == "noisy"
    assert gate.verdict(noisy) == "no significant change"


def test_busy_machine_needs_a_larger_change():
    # Measured while other processes kept a CPU busy: cache and memory contention move
    # ratios by more than 10%, so the gate asks for more before failing.
    busy = fake_run(p=fake_entry(seed=2, load=1.5, nlsq_hot=1.2))
    quiet = fake_run(p=fake_entry(seed=2, load=0.0, nlsq_hot=1.2))
    assert statuses(gate.evaluate(busy, BASELINE))["hot"] == "noisy"
    assert statuses(gate.evaluate(quiet, BASELINE))["hot"] == "regression"
    huge = fake_run(p=fake_entry(seed=2, load=1.5, nlsq_hot=3.0))
    assert statuses(gate.evaluate(huge, BASELINE))["hot"] == "regression"


def test_recompiling_in_the_hot_loop_fails_whatever_the_timings():
    findings = gate.evaluate(fake_run(p=fake_entry(seed=2, loop_compiles=5)), BASELINE)
    assert any(f.metric == "compiles" and f.status == "regression" for f in findings)


def test_inaccurate_fit_fails():
    entry = fake_entry(seed=2)
    entry["hot"][0]["accuracy"]["nlsq"] = {"accurate": False, "max_error": 0.5, "popt": [0.0]}
    findings = gate.evaluate(fake_run(p=entry), BASELINE)
    assert statuses(findings)["accuracy"] == "regression"


def test_worker_error_fails():
    findings = gate.evaluate(fake_run(p={"error": "worker exited 1"}), BASELINE)
    assert gate.verdict(findings) == "regression"


class FakeMeasurements:
    """Stands in for the workers: the first attempt of a problem may be slowed down."""

    def __init__(self, first: float, later: float) -> None:
        self.factors = [first, later, later]
        self.calls = 0

    def measure(self, problem) -> dict:
        return fake_entry(seed=10, nlsq_hot=self.factors[0])

    def remeasure(self, entry: dict, problem, metric: str) -> None:
        self.calls += 1
        entry[metric].append(
            fake_entry(seed=10 + self.calls, nlsq_hot=self.factors[self.calls])[metric][0]
        )


def gate_with(fake: FakeMeasurements) -> list[gate.Finding]:
    """The gate's measure / re-measure loop on ``fake`` measurements of one problem."""
    baseline = fake_run(**{"exponential-1e3": fake_entry(seed=1)})
    _, findings = gate.gate_loop(
        [PROBLEMS["exponential-1e3"]],
        baseline,
        fake.measure,
        fake.remeasure,
        progress=lambda _: None,
    )
    return findings


def test_transient_slowdown_is_measured_again_and_passes():
    fake = FakeMeasurements(first=1.5, later=1.0)
    findings = gate_with(fake)
    assert fake.calls == 1
    assert gate.verdict(findings) == "no significant change"


def test_persistent_slowdown_fails_after_every_retry():
    fake = FakeMeasurements(first=1.5, later=1.5)
    findings = gate_with(fake)
    assert fake.calls == gate.Thresholds().retries
    hot = next(f for f in findings if f.metric == "hot")
    assert hot.status == "regression" and hot.attempts == 3


def fake_document(problems: dict, **env_changes: object) -> dict:
    """A run document around ``problems``, with a plausible environment."""
    env = dict.fromkeys(("os", "python", "jax", "jaxlib", "numpy", "scipy", "nlsq_version"), "0")
    env.update(
        timestamp_utc="2026-01-01T00:00:00+00:00",
        platform="linux-x86_64-cpu",
        cpu_model="test CPU",
        cpu_count=2,
        jax_backend="cpu",
        jax_device="cpu:0",
        nlsq_source={"commit": "abc"},
    )
    env.update(env_changes)
    return {"environment": env, "settings": {"pin_cpu": True}, "problems": problems}


def test_report_of_a_regression_leads_with_the_verdict():
    from benchmark import report

    base = fake_document({"p": fake_entry(seed=1)})
    run = fake_document({"p": fake_entry(seed=2, nlsq_hot=1.5)})
    text = report.render(run, base)
    assert "**Verdict: regression.**" in text.split("## Cold start")[0]
    assert "| p | 1e3 | 3 | plain |" in text


def test_baseline_update_replaces_only_the_measured_problems():
    base = fake_document({"p": fake_entry(seed=1), "q": fake_entry(seed=2)})
    run = fake_document(
        {"q": fake_entry(seed=3), "r": fake_entry(seed=4)},
        timestamp_utc="2026-01-02T00:00:00+00:00",
        nlsq_source={"commit": "def"},
    )
    merged = gate.update_baseline(base, run)
    assert merged["problems"]["p"] is base["problems"]["p"]
    assert merged["problems"]["q"] is run["problems"]["q"]
    assert set(merged["problems"]) == {"p", "q", "r"}
    (update,) = merged["environment"]["updates"]
    assert update["problems"] == ["q", "r"] and update["nlsq_source"] == {"commit": "def"}
    assert merged["environment"]["timestamp_utc"] == "2026-01-01T00:00:00+00:00"
    assert "updates" not in base["environment"]  # the loaded baseline is not modified


def test_baseline_update_refuses_other_versions():
    base = fake_document({"p": fake_entry(seed=1)})
    run = fake_document({"p": fake_entry(seed=2)}, jax="1")
    with pytest.raises(ValueError, match="jax 0 in the baseline, 1 now"):
        gate.update_baseline(base, run)


def test_batch_data_and_accuracy():
    problem = PROBLEMS["gaussian-64-batch1000"]
    x, y = dataset(problem, 0)
    assert x.shape == (64,) and y.shape == (1000, 64)
    assert not np.array_equal(y[0], y[1])  # every fit has its own noise
    popt = np.tile(problem.model.true, (3, 1))
    assert is_accurate(popt, problem.model) and max_error(popt, problem.model.true) == 0.0
    popt[1, 0] *= 2.0  # one bad fit spoils the batch
    assert not is_accurate(popt, problem.model)
    assert max_error(popt, problem.model.true) == pytest.approx(1.0)
