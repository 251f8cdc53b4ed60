"""Performance regression gate: a fresh run against the committed baseline.

``pytest benchmark/test_performance_regression.py`` measures the quick problems (a few
minutes on two cores) and fails on a cold or hot regression; memory only warns. On the
machine type a committed baseline was recorded on (``benchmark/baselines/<platform>.json``
or ``benchmark/baselines/<platform>/<machine-id>.json``) it compares with its stored
figures; elsewhere it measures the baseline's revision beside the working tree, interleaved.
``NLSQ_BENCH_PROBLEMS=all`` (or a comma-separated list of problems or tags) measures more.

It also proves that the gate can fail, in both modes whatever the machine: a run with
nlsq's in-memory program cache disabled (``NLSQ_CACHE_ENABLE=0``: every call traces and
compiles again) must be reported as a regression. The remaining tests check the gate's
decisions on made-up measurements.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import pytest

from benchmark import gate, runner
from benchmark.machine import machine_fingerprint, machine_id
from benchmark.problems import PROBLEMS, dataset, is_accurate, max_error, select
from benchmark.reference import (
    BASELINE_DIR,
    SIDE_BY_SIDE,
    STORED,
    MissingBaseline,
    MissingRevision,
    baseline_path,
    choose_comparison,
    find_baselines,
    machine_differences,
    reference_commit,
    select_comparison,
)

SELECTION = os.environ.get("NLSQ_BENCH_PROBLEMS", "quick")
RESULT_PATH = runner.BENCHMARK_DIR / "results" / "gate-latest.json"


def _print(message: str) -> None:
    print(message, flush=True)


# --- the gate on this checkout -------------------------------------------------------


def _gate(problems: list, **kwargs) -> tuple[dict, list[gate.Finding]]:
    """:func:`benchmark.gate.run_gate`; a missing baseline or revision fails with its advice."""
    try:
        return gate.run_gate(problems, progress=_print, **kwargs)
    except (MissingBaseline, MissingRevision) as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture(scope="module")
def gate_run():
    run, findings = _gate(select(SELECTION))
    paths = gate.save_gate_run(run, RESULT_PATH)
    _print(gate.format_findings(findings))
    _print(
        f"verdict: {gate.verdict(findings)} ({run['baseline']['mode']} mode); "
        f"saved to {', '.join(map(str, paths))}"
    )
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


#: The injected run: hot only, short (every fit compiles, so each takes ~0.3 s).
INJECTED_SETTINGS = runner.Settings(hot_min_repeats=3, hot_max_repeats=20, hot_budget_s=1.0)


def _stored_baseline_of_this_machine(problem) -> dict:
    """A committed baseline recorded on this machine, else a quick run of the working tree.

    Either way the stored-figures path compares like with like: on a foreign machine a
    measurement of the working tree without the injection, in this same process, stands
    in for a baseline of this machine.
    """
    with runner.Workspace(runner.Target(), INJECTED_SETTINGS) as ws:
        environment = runner.environment(ws)
    try:
        comparison = select_comparison(environment)
    except MissingBaseline:
        comparison = None
    if (
        comparison is not None
        and comparison.mode == STORED
        and comparison.baseline["problems"].get(problem.name, {}).get("hot")
    ):
        _print(f"stored baseline: {comparison.reason}")
        return dict(comparison.baseline)
    _print("stored baseline: none of this machine; measuring the working tree as one")
    return runner.run_suite(
        [problem], settings=INJECTED_SETTINGS, progress=_print, metrics=("hot",)
    )


@pytest.mark.timeout(900)
@pytest.mark.parametrize("mode", [STORED, SIDE_BY_SIDE])
def test_injected_slowdown_is_reported(mode):
    """Disabling the program cache (every fit compiles again) must fail the comparison."""
    problem = PROBLEMS["exponential-1e3"]
    slow = runner.Target(env={"NLSQ_CACHE_ENABLE": "0"}, label="injected: program cache off")
    baseline = _stored_baseline_of_this_machine(problem) if mode == STORED else None
    run, findings = _gate(
        [problem],
        baseline=baseline,
        target=slow,
        settings=INJECTED_SETTINGS,
        metrics=("hot",),
        mode=mode,
    )
    _print(gate.format_findings(findings))
    assert run["baseline"]["mode"] == mode
    hot = next(f for f in findings if f.metric == "hot")
    assert hot.status == "regression" and hot.change > 1.0, hot
    assert hot.attempts == 1 + gate.Thresholds().retries  # confirmed by re-measuring
    compiles = next(f for f in findings if f.metric == "compiles")
    assert compiles.status == "regression", compiles
    assert gate.verdict(findings) == "regression"
    assert run["environment"]["injected_env"] == {"NLSQ_CACHE_ENABLE": "0"}
    if mode == SIDE_BY_SIDE:
        # The injection slowed the working tree only; both sides were measured again.
        reference = run["reference"]
        assert reference["environment"]["injected_env"] == {}
        ref_hot = reference["problems"][problem.name]["hot"]
        assert len(ref_hot) == hot.attempts
        assert all(a["loop_compiles"] == 0 for a in ref_hot)


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


# --- which comparison: machine fingerprints and the mode (made-up machines) -----------

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 106
model name\t: Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz
stepping\t: 6
cache size\t: 55296 KB
flags\t\t: fpu sse sse2 sse4_1 sse4_2 avx fma avx2 bmi2 avx512f avx512bw hypervisor

processor\t: 1
vendor_id\t: GenuineIntel
stepping\t: 7
"""


def test_fingerprint_reads_the_first_processor_and_the_isa_flags():
    machine = machine_fingerprint(CPUINFO, cpus=2, environ={"OPENBLAS_CORETYPE": "Haswell"})
    assert machine["vendor_id"] == "GenuineIntel"
    assert (machine["cpu_family"], machine["model"], machine["stepping"]) == ("6", "106", "6")
    assert machine["cache_size"] == "55296 KB" and machine["cpus"] == 2
    assert machine["isa"] == ["sse4_2", "avx", "avx2", "fma", "bmi2", "avx512f", "avx512bw"]
    assert machine["openblas_coretype"] == "Haswell" and machine["xla_cpu_max_isa"] is None
    capped = machine_fingerprint(CPUINFO, 2, {"XLA_FLAGS": "--a=1 --xla_cpu_max_isa=AVX"})
    assert capped["xla_cpu_max_isa"] == "AVX"
    assert machine["id"] == machine_id(machine)
    assert (
        machine["id"] == machine_fingerprint(CPUINFO, 2, {"OPENBLAS_CORETYPE": "Haswell"})["id"]
    )  # stable


def test_fingerprint_without_cpuinfo_has_empty_fields():
    machine = machine_fingerprint("", cpus=4, environ={})
    assert machine["vendor_id"] is None and machine["model"] is None and machine["isa"] == []
    assert machine["cpus"] == 4 and len(machine["id"]) == 12


def test_same_machine_matches():
    machine = machine_fingerprint(CPUINFO, cpus=2, environ={})
    assert machine_differences(machine, dict(machine)) == []


@pytest.mark.parametrize(
    ("text", "cpus", "environ", "field"),
    [
        (CPUINFO.replace("106", "85", 1), 2, {}, "model"),
        (CPUINFO.replace(": 6\ncache", ": 7\ncache"), 2, {}, "stepping"),
        (CPUINFO.replace("Platinum 8375C", "Gold 6338"), 2, {}, "model_name"),
        (CPUINFO, 4, {}, "cpus"),
        (CPUINFO.replace(" avx512f avx512bw", ""), 2, {}, "isa"),
        (CPUINFO, 2, {"OPENBLAS_CORETYPE": "Haswell"}, "openblas_coretype"),
        (CPUINFO, 2, {"XLA_FLAGS": "--xla_cpu_max_isa=AVX2"}, "xla_cpu_max_isa"),
    ],
)
def test_another_machine_differs_in_the_named_field(text, cpus, environ, field):
    recorded = machine_fingerprint(CPUINFO, cpus=2, environ={})
    here = machine_fingerprint(text, cpus=cpus, environ=environ)
    (difference,) = machine_differences(here, recorded)
    assert difference.startswith(field)
    assert here["id"] != recorded["id"]


def test_missing_isa_flags_are_named():
    recorded = machine_fingerprint(CPUINFO, cpus=2, environ={})
    here = machine_fingerprint(CPUINFO.replace(" avx512f avx512bw", ""), 2, {})
    assert machine_differences(here, recorded) == [
        "isa: missing here avx512bw, avx512f; only here none"
    ]


def test_baseline_without_machine_block_matches_no_machine():
    machine = machine_fingerprint(CPUINFO, cpus=2, environ={})
    (difference,) = machine_differences(machine, None)
    assert "no machine fingerprint" in difference


HERE = machine_fingerprint(CPUINFO, cpus=2, environ={})
ELSEWHERE = machine_fingerprint(CPUINFO.replace("106", "143", 1), cpus=2, environ={})


def baseline_of(machine: dict | None, commit: str = "abc", **extra: object) -> dict:
    """A baseline document recorded on ``machine`` (None: before fingerprints) at ``commit``."""
    env_changes: dict = {"nlsq_source": {"commit": commit}, **extra}
    if machine is not None:
        env_changes["machine"] = machine
    return {"schema": runner.SCHEMA, **fake_document({"p": fake_entry(seed=1)}, **env_changes)}


def test_baseline_of_this_machine_is_compared_with_its_stored_figures():
    comparison = choose_comparison(HERE, (Path("platform.json"), baseline_of(HERE)))
    assert comparison.mode == STORED and comparison.path == Path("platform.json")


def test_other_machine_or_no_fingerprint_measures_side_by_side():
    for recorded in (ELSEWHERE, None):
        comparison = choose_comparison(HERE, (Path("platform.json"), baseline_of(recorded)))
        assert comparison.mode == SIDE_BY_SIDE
        assert comparison.differences  # says why
        assert "side-by-side mode" in comparison.describe(HERE)
        assert comparison.differences[0] in comparison.describe(HERE)


def test_per_machine_baseline_of_this_machine_is_preferred():
    reference = (Path("platform.json"), baseline_of(None))
    per_machine = {Path("other.json"): baseline_of(ELSEWHERE), Path("here.json"): baseline_of(HERE)}
    comparison = choose_comparison(HERE, reference, per_machine)
    assert comparison.mode == STORED and comparison.path == Path("here.json")
    # Only other machines' per-machine baselines: the platform's revision, side by side.
    del per_machine[Path("here.json")]
    comparison = choose_comparison(HERE, reference, per_machine)
    assert comparison.mode == SIDE_BY_SIDE and comparison.path == Path("platform.json")


def test_mode_can_be_forced():
    reference = (Path("platform.json"), baseline_of(HERE))
    forced = choose_comparison(HERE, reference, mode=SIDE_BY_SIDE)
    assert forced.mode == SIDE_BY_SIDE and forced.differences == ()
    reference = (Path("platform.json"), baseline_of(ELSEWHERE))
    forced = choose_comparison(HERE, reference, mode=STORED)
    assert forced.mode == STORED and forced.differences
    with pytest.raises(ValueError, match="gate mode"):
        choose_comparison(HERE, reference, mode="sometimes")


def test_committed_baselines_are_found_by_fingerprint(tmp_path):
    with pytest.raises(MissingBaseline, match="--machine"):
        find_baselines("linux-x86_64-cpu", tmp_path)
    runner.save(baseline_of(HERE), tmp_path / "linux-x86_64-cpu" / "any-name.json")
    environment = {"platform": "linux-x86_64-cpu", "machine": HERE}
    # No platform baseline: the per-machine one stands in, and it is this machine's.
    comparison = select_comparison(environment, directory=tmp_path)
    assert comparison.mode == STORED and comparison.path.name == "any-name.json"
    runner.save(baseline_of(None, commit="def"), tmp_path / "linux-x86_64-cpu.json")
    elsewhere = {"platform": "linux-x86_64-cpu", "machine": ELSEWHERE}
    comparison = select_comparison(elsewhere, directory=tmp_path)
    assert comparison.mode == SIDE_BY_SIDE
    assert comparison.path == tmp_path / "linux-x86_64-cpu.json"
    assert reference_commit(comparison.baseline, ["p"]) == "def"


def test_reference_commit_follows_partial_updates():
    baseline = baseline_of(None, commit="first")
    baseline["environment"]["updates"] = [
        {"nlsq_source": {"commit": "second"}, "problems": ["batch"]}
    ]
    assert reference_commit(baseline, ["p"]) == "first"
    assert reference_commit(baseline, ["p", "batch"]) == "second"


def test_missing_revision_says_what_to_do():
    from benchmark import compare

    commit = "0123456789abcdef0123456789abcdef01234567"
    with pytest.raises(MissingRevision, match=f"git fetch origin {commit}"):
        compare.require_commit(commit)
    with pytest.raises(MissingRevision, match="records no nlsq commit"):
        compare.require_commit(None)


# --- side by side: both revisions, interleaved (made-up measurements) -----------------


def hot_entry(*factors: float, seed: int = 0) -> dict:
    """A problem entry with one hot attempt per factor (nlsq's hot time scaled by it)."""
    entry = fake_entry(seed=seed)
    entry["hot"] = [fake_entry(seed=seed + i, nlsq_hot=f)["hot"][0] for i, f in enumerate(factors)]
    return entry


def test_side_by_side_attempts_are_judged_against_their_partners():
    # The machine got busier after the first round and slowed nlsq on both sides alike:
    # against its partner the second attempt is no change; against the pooled samples
    # of the revision it would look like a regression.
    reference = fake_run(p=hot_entry(1.0, 1.5, seed=1))
    run = fake_run(p=hot_entry(1.5, 1.5, seed=5))
    assert statuses(gate.evaluate(run, reference, paired=True))["hot"] == "ok"
    assert statuses(gate.evaluate(run, reference))["hot"] == "regression"


class FakeSides:
    """Stands in for both revisions' workers: nlsq's hot time factor per side and attempt."""

    def __init__(self, reference: list[float], working_tree: list[float]) -> None:
        self.factors = (reference, working_tree)
        self.calls: list[tuple[int, str, str]] = []

    def measure(self, side: int, problem, metric: str) -> dict:
        attempt = self.calls.count((side, problem.name, metric))
        self.calls.append((side, problem.name, metric))
        factor = self.factors[side][attempt]
        entry = fake_entry(seed=100 * side + attempt, nlsq_hot=factor)
        return {
            **entry,
            "cold": entry["cold"] if metric == "cold" else [],
            "hot": entry["hot"] if metric == "hot" else [],
        }


def side_by_side_with(fake: FakeSides, problems: list[str], waits: list) -> list[gate.Finding]:
    sides = gate.SideBySide(
        fake.measure, ("cold", "hot"), wait=lambda: waits.append(1), progress=lambda _: None
    )
    _, findings = gate.gate_loop(
        [PROBLEMS[name] for name in problems],
        sides.reference,
        sides.measure,
        sides.remeasure,
        progress=lambda _: None,
        paired=True,
    )
    return findings


def test_side_by_side_alternates_the_order_between_problems():
    fake = FakeSides([1.0] * 3, [1.0] * 3)
    side_by_side_with(fake, ["exponential-1e3", "gaussian-1e4"], [])
    order = [(side, metric) for side, _, metric in fake.calls]
    assert order == [
        (0, "cold"), (1, "cold"), (1, "hot"), (0, "hot"),  # first problem: A B, B A
        (1, "cold"), (0, "cold"), (0, "hot"), (1, "hot"),  # second: B A, A B
    ]  # fmt: skip


def test_side_by_side_remeasures_both_sides_and_fails_a_persistent_slowdown():
    fake = FakeSides([1.0] * 3, [1.5] * 3)
    waits: list = []
    findings = side_by_side_with(fake, ["exponential-1e3"], waits)
    again = [(side, metric) for side, _, metric in fake.calls[4:]]  # after the first round
    assert again == [(0, "hot"), (1, "hot"), (1, "hot"), (0, "hot")]  # order alternating
    assert len(waits) == gate.Thresholds().retries  # one wait per retry, for both sides
    hot = next(f for f in findings if f.metric == "hot")
    assert hot.status == "regression" and hot.attempts == 3


def test_side_by_side_transient_slowdown_passes():
    fake = FakeSides([1.0] * 3, [1.5, 1.0, 1.0])
    findings = side_by_side_with(fake, ["exponential-1e3"], [])
    assert fake.calls[4:] == [(0, "exponential-1e3", "hot"), (1, "exponential-1e3", "hot")]
    assert gate.verdict(findings) == "no significant change"


def test_machine_baseline_is_written_to_the_per_machine_path():
    import argparse

    from benchmark.__main__ import _baseline_output, main

    run = {"environment": {"platform": "linux-x86_64-cpu", "machine": HERE}}
    args = argparse.Namespace(output=None, machine=True)
    expected = BASELINE_DIR / "linux-x86_64-cpu" / f"{HERE['id']}.json"
    assert _baseline_output(args, run) == expected
    assert _baseline_output(argparse.Namespace(output=None, machine=False), run) == (
        baseline_path("linux-x86_64-cpu")
    )
    with pytest.raises(SystemExit):  # the option exists
        main(["baseline", "--machine", "--help"])
