"""The Markdown performance report: verdict, tables per metric, where the time goes, plots.

:func:`write_report` renders a run (optionally against a baseline or another revision's
run) into ``<out>/report.md`` with its PNG plots next to it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmark import gate, runner
from benchmark.stats import median, relative_spread

STATUS_LABELS = {
    "regression": "**REGRESSION**",
    "error": "**ERROR**",
    "improvement": "improvement",
    "warning": "warning",
    "noisy": "noisy",
    "ok": "ok",
    "new": "new",
}


# --- figures of one problem ----------------------------------------------------------


def summarise(entry: Mapping[str, Any]) -> dict[str, float]:
    """Medians of one problem's samples, all attempts pooled (NaN where not measured)."""
    out: dict[str, float] = {}
    if entry.get("cold"):
        cold = gate.merge_cold(entry["cold"])
        nl, sp = cold["nlsq"], cold["scipy"]
        out.update(
            nlsq_cold_s=median([s["cold_s"] for s in nl]),
            scipy_cold_s=median([s["cold_s"] for s in sp]),
            nlsq_cold_cpu_s=median([s["cold_cpu_s"] for s in nl]),
            scipy_cold_cpu_s=median([s["cold_cpu_s"] for s in sp]),
            import_s=median([s["import_s"] for s in nl]),
            import_cpu_s=median([s["import_cpu_s"] for s in nl]),
            first_call_s=median([s["first_call_s"] for s in nl]),
            first_call_cpu_s=median([s["first_call_cpu_s"] for s in nl]),
            compile_s=median([s.get("compile_s", 0.0) for s in nl]),
            compiles=median([s.get("compiles", 0) for s in nl]),
            disk_hits=median([s.get("disk_hits", 0) for s in nl]),
            scipy_import_s=median([s["import_s"] for s in sp]),
            nlsq_rss_mb=median([s["peak_rss_mb"] for s in nl]),
            nlsq_import_rss_mb=median([s["rss_after_import_mb"] for s in nl]),
            scipy_rss_mb=median([s["peak_rss_mb"] for s in sp]),
            scipy_import_rss_mb=median([s["rss_after_import_mb"] for s in sp]),
            cold_ratio=runner.cold_ratio(cold, "wall")[0],
            cold_ratio_cpu=runner.cold_ratio(cold, "cpu")[0],
            cold_load=runner.others_cpus(cold),
        )
    if entry.get("hot"):
        hot = gate.merge_hot(entry["hot"])
        ratio, noise = runner.hot_ratio(hot, "cpu")
        acc = hot["accuracy"]
        out.update(
            nlsq_hot_s=median(hot["nlsq_s"]),
            scipy_hot_s=median(hot["scipy_s"]),
            nlsq_hot_cpu_s=median(hot["nlsq_cpu_s"]),
            scipy_hot_cpu_s=median(hot["scipy_cpu_s"]),
            hot_ratio=runner.hot_ratio(hot, "wall")[0],
            hot_ratio_cpu=ratio,
            hot_noise=noise,
            hot_load=hot["others_cpus"],
            scipy_spread=relative_spread(hot["scipy_s"]),
            pairs=len(hot["nlsq_s"]),
            loop_compiles=hot["loop_compiles"],
            nlsq_error=acc["nlsq"]["max_error"],
            scipy_error=acc["scipy"]["max_error"],
            nlsq_accurate=float(acc["nlsq"]["accurate"]),
            scipy_accurate=float(acc["scipy"]["accurate"]),
            agreement=max(
                abs(a - b) / max(abs(b), 1.0)
                for a, b in zip(acc["nlsq"]["popt"], acc["scipy"]["popt"], strict=True)
            ),
        )
    return out


# --- formatting helpers ----------------------------------------------------------------


def _num(value: float | None, spec: str = ".3g") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return format(value, spec)


def _pct(change: float | None) -> str:
    return "–" if change is None or math.isnan(change) else f"{100 * change:+.1f}%"


def _ms(seconds: float | None) -> str:
    return _num(None if seconds is None else 1e3 * seconds, ".3g")


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[str]], align: str) -> str:
    """A Markdown table; ``align`` has one ``l`` or ``r`` per column."""
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _finding_index(findings: Iterable[gate.Finding]) -> dict[tuple[str, str], gate.Finding]:
    index: dict[tuple[str, str], gate.Finding] = {}
    for f in findings:
        # Keep the most severe finding of a (problem, metric), e.g. a compile regression.
        key = (f.problem, f.metric)
        if key not in index or f.status != "ok":
            index[key] = f
    return index


def _status(index: Mapping, name: str, metric: str) -> tuple[str, str]:
    f = index.get((name, metric))
    if f is None:
        return "–", "–"
    return _pct(f.change), STATUS_LABELS.get(f.status, f.status)


def _decided(index: Mapping, name: str, metric: str, pooled: float) -> float:
    """The ratio the gate judged (its chosen attempt), else the pooled one."""
    f = index.get((name, metric))
    return pooled if f is None or f.value is None else f.value


def _base_figures(baseline: Mapping | None, name: str) -> dict[str, float]:
    if not baseline or name not in baseline["problems"]:
        return {}
    entry = baseline["problems"][name]
    return {} if entry.get("error") else summarise(entry)


def _measured(run: Mapping, figures: Mapping[str, dict], key: str) -> Iterator[tuple]:
    """``(name, entry, figures)`` of the problems of ``run`` whose figures include ``key``."""
    for name, entry in run["problems"].items():
        f = figures.get(name, {})
        if key in f:
            yield name, entry, f


# --- sections ------------------------------------------------------------------------


def _metric_rollup(findings: Sequence[gate.Finding], metric: str) -> list[str]:
    rel = [f for f in findings if f.metric == metric and f.status != "new"]
    changes = [f.change for f in rel if f.change is not None]
    worst = max((f for f in rel if f.change is not None), key=lambda f: f.change, default=None)
    count = {s: sum(f.status == s for f in rel) for s in ("regression", "improvement")}
    warnings = sum(f.status in gate.WARNING for f in rel)
    return [
        _pct(median(changes)) if changes else "–",
        f"{worst.problem} ({_pct(worst.change)})" if worst else "–",
        str(count["regression"]),
        str(count["improvement"]),
        str(warnings),
    ]


SUMMARY_METRICS = (
    ("cold", "nlsq/scipy fresh-process time (import + first fit)"),
    ("hot", "nlsq/scipy time per fit, compiled program reused"),
    ("memory", "nlsq peak RSS of a fresh process"),
    ("accuracy", "largest parameter error against the truth"),
    ("compiles", "programs compiled during the hot loop"),
)


def summary_table(findings: Sequence[gate.Finding]) -> str:
    """One row per metric: median change, worst problem, counts by status."""
    rows = [[m, what, *_metric_rollup(findings, m)] for m, what in SUMMARY_METRICS]
    headers = [
        "metric",
        "compared",
        "median change",
        "worst problem (change)",
        "regressions",
        "improvements",
        "warnings",
    ]
    return markdown_table(headers, rows, "llllrrr")


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def _span(values: Sequence[float], spec: str) -> str:
    low, high = format(min(values), spec), format(max(values), spec)
    return low if low == high else f"{low}–{high}"


def _headline(run: Mapping, figures: Mapping[str, dict]) -> list[str]:
    """Bullets that need no baseline: how nlsq compares with scipy in this run."""
    lines = []
    hot = {n: f for n, f in figures.items() if "hot_ratio_cpu" in f}
    if hot:
        ratios = [f["hot_ratio_cpu"] for f in hot.values()]
        faster = sum(r < 1 for r in ratios)
        lines.append(
            f"**Hot** (repeated fits, compiled program reused): nlsq is faster than scipy on "
            f"{faster} of {_plural(len(hot), 'problem')}; nlsq/scipy time ratio median "
            f"{median(ratios):.2f} ({_span(ratios, '.2f')})."
        )
        cross = _crossover(run, figures)
        if cross:
            lines.append(cross)
    cold = {n: f for n, f in figures.items() if "nlsq_cold_s" in f}
    if cold:
        nl = [f["nlsq_cold_cpu_s"] for f in cold.values()]
        sp = [f["scipy_cold_cpu_s"] for f in cold.values()]
        share = median(
            [time_split(f)[2] / f["nlsq_cold_cpu_s"] for f in cold.values() if "pairs" in f]
        )
        imp = median([f["import_cpu_s"] for f in cold.values()])
        warm = {n for n, e in run["problems"].items() if e["problem"].get("warm_disk_cache")}
        counts = sorted({int(f["compiles"]) for n, f in cold.items() if n not in warm}) or [0]
        compiles = " or ".join(map(str, counts[:-1] + [_plural(counts[-1], "program")]))
        lines.append(
            f"**Cold** (fresh process: import, then the first fit with trace and compile): "
            f"nlsq median {median(nl):.2f} s against scipy's {median(sp):.2f} s; of nlsq's, "
            f"{imp:.2f} s is import and {_num(100 * share, '.0f')}% is XLA compilation "
            f"({compiles} compiled per first call), which a warm persistent cache removes "
            f"(see *Where the time goes*)."
        )
        loop = [f["loop_compiles"] for f in figures.values() if "loop_compiles" in f]
        if loop:
            lines.append(
                f"**Compiles during hot fits**: {int(sum(loop))} in "
                f"{int(sum(f['pairs'] for f in figures.values() if 'pairs' in f))} fits "
                f"(a fit reuses its compiled program)."
            )
        rss = [f["nlsq_rss_mb"] for f in cold.values()]
        srss = [f["scipy_rss_mb"] for f in cold.values()]
        lines.append(
            f"**Memory**: nlsq peak RSS {_span(rss, '.0f')} MiB (scipy {_span(srss, '.0f')} "
            f"MiB); most of nlsq's is the JAX runtime and the compiler, whatever the data size."
        )
    acc = {n: f for n, f in figures.items() if "nlsq_error" in f}
    if acc:
        bad = [n for n, f in acc.items() if not f["nlsq_accurate"]]
        agree = max(f["agreement"] for f in acc.values())
        verdict = (
            f"{_plural(len(bad), 'fit')} missed the truth ({', '.join(bad)})"
            if bad
            else f"every nlsq fit ({len(acc)}) recovers the true parameters within tolerance"
        )
        lines.append(
            f"**Accuracy**: {verdict}; nlsq's and scipy's parameters agree to {agree:.1e} "
            f"(relative) or better."
        )
    loads = [f[k] for f in figures.values() for k in ("cold_load", "hot_load") if k in f]
    if loads and median(loads) > gate.BUSY_CPUS:
        lines.append(
            f"*Measured while other processes used {median(loads):.1f} CPUs on average: "
            f"wall-clock times are inflated; the ratios above are CPU-time ratios, which such "
            f"load affects less, though not nothing (the hot ratio of the same code has moved "
            f"by 20 to 30% between runs under such load).*"
        )
    return lines


def _crossover(run: Mapping, figures: Mapping[str, dict]) -> str | None:
    """Where nlsq's hot time drops below scipy's on the size sweep, per model."""
    parts = []
    for family, points in _sweep_points(run, figures).items():
        if len(points) < 2:
            continue
        faster = [n for n, f in points if f.get("hot_ratio_cpu", math.inf) < 1]
        if faster:
            parts.append(f"{family} from n = {_n_label(min(faster))}")
        else:
            parts.append(f"{family} not up to n = {_n_label(max(n for n, _ in points))}")
    if not parts:
        return None
    return "Size sweep, where nlsq's hot fit overtakes scipy's: " + "; ".join(parts) + "."


def _sweep_points(run: Mapping, figures: Mapping[str, dict]) -> dict[str, list]:
    points: dict[str, list] = {}
    for name, entry in run["problems"].items():
        spec = entry["problem"]
        if "sweep" in spec["tags"] and name in figures:
            points.setdefault(spec["family"], []).append((spec["n"], figures[name]))
    return {k: sorted(v, key=lambda p: p[0]) for k, v in points.items()}


def _n_label(n: int) -> str:
    exponent = int(round(math.log10(n)))
    return f"1e{exponent}" if 10**exponent == n else str(n)


def _spec_cells(entry: Mapping) -> list[str]:
    spec = entry["problem"]
    return [_n_label(spec["n"]), str(spec["n_params"]), spec["variant"]]


def cold_table(run, figures, base, index, label: str = "baseline") -> str:
    rows = []
    for name, entry, f in _measured(run, figures, "nlsq_cold_s"):
        b = base.get(name, {})
        change, status = _status(index, name, "cold")
        rows.append(
            [
                name,
                *_spec_cells(entry),
                _num(f["nlsq_cold_cpu_s"]),
                _num(f["scipy_cold_cpu_s"]),
                _num(_decided(index, name, "cold", f["cold_ratio_cpu"])),
                _num(b.get("cold_ratio_cpu")),
                change,
                status,
                _num(f["nlsq_cold_s"]),
                _num(f["cold_ratio"]),
            ]
        )
    headers = [
        "problem",
        "n",
        "params",
        "variant",
        "nlsq [s]",
        "scipy [s]",
        "nlsq/scipy",
        f"{label} nlsq/scipy",
        "change",
        "status",
        "nlsq wall [s]",
        "wall nlsq/scipy",
    ]
    return markdown_table(headers, rows, "lrrlrrrrrlrr")


def hot_table(run, figures, base, index, label: str = "baseline") -> str:
    rows = []
    for name, entry, f in _measured(run, figures, "nlsq_hot_s"):
        b = base.get(name, {})
        change, status = _status(index, name, "hot")
        compiles = index.get((name, "compiles"))
        if compiles is not None and compiles.status == "regression":
            status = f"{status}; {compiles.message}"
        rows.append(
            [
                name,
                *_spec_cells(entry),
                _ms(f["nlsq_hot_cpu_s"]),
                _ms(f["scipy_hot_cpu_s"]),
                _num(_decided(index, name, "hot", f["hot_ratio_cpu"])),
                f"{100 * f['hot_noise']:.1f}%",
                _num(b.get("hot_ratio_cpu")),
                change,
                status,
                str(int(f["pairs"])),
                _num(f["hot_ratio"]),
            ]
        )
    headers = [
        "problem",
        "n",
        "params",
        "variant",
        "nlsq [ms]",
        "scipy [ms]",
        "nlsq/scipy",
        "± noise",
        f"{label} nlsq/scipy",
        "change",
        "status",
        "pairs",
        "wall nlsq/scipy",
    ]
    return markdown_table(headers, rows, "lrrlrrrrrrlrr")


def memory_table(run, figures, base, index, label: str = "baseline") -> str:
    rows = []
    for name, _, f in _measured(run, figures, "nlsq_rss_mb"):
        b = base.get(name, {})
        change, status = _status(index, name, "memory")
        rows.append(
            [
                name,
                _num(f["nlsq_rss_mb"], ".0f"),
                _num(f["nlsq_import_rss_mb"], ".0f"),
                _num(f["scipy_rss_mb"], ".0f"),
                _num(f["nlsq_rss_mb"] / f["scipy_rss_mb"], ".2f"),
                _num(b.get("nlsq_rss_mb"), ".0f"),
                change,
                status,
            ]
        )
    headers = [
        "problem",
        "nlsq peak [MiB]",
        "nlsq after import [MiB]",
        "scipy peak [MiB]",
        "nlsq/scipy",
        f"{label} nlsq [MiB]",
        "change",
        "status",
    ]
    return markdown_table(headers, rows, "lrrrrrrl")


BATCH_NOTE = (
    "Many small fits per call: nlsq fits them all with one `nlsq.curve_fit_batch` call "
    "(one compiled, vectorised program), scipy with a loop of `curve_fit` calls in the same "
    "process. Fits per second of CPU time (hot, compiled program reused); the first call, "
    "with trace and compile, is in *Cold start*."
)


def _fits(entry: Mapping) -> int:
    return entry["problem"].get("batch") or 1


def batch_table(run, figures, base, index, label: str = "baseline") -> str:
    """Fits per second of the batch problems: curve_fit_batch against scipy's loop."""
    rows = []
    for name, entry, f in _measured(run, figures, "nlsq_hot_cpu_s"):
        if not entry["problem"].get("batch"):
            continue
        b = base.get(name, {})
        change, status = _status(index, name, "hot")
        ratio = _decided(index, name, "hot", f["hot_ratio_cpu"])
        rows.append(
            [
                name,
                str(_fits(entry)),
                str(entry["problem"]["n"]),
                entry["problem"]["variant"],
                _num(_fits(entry) / f["nlsq_hot_cpu_s"], ",.0f"),
                _num(_fits(entry) / f["scipy_hot_cpu_s"], ",.0f"),
                _num(1 / ratio, ".1f") + "x",
                _num(1 / b["hot_ratio_cpu"], ".1f") + "x" if "hot_ratio_cpu" in b else "–",
                change,
                status,
                _num(f.get("nlsq_cold_cpu_s"), ".2f"),
            ]
        )
    headers = [
        "problem",
        "fits per call",
        "points per fit",
        "variant",
        "nlsq [fits/s]",
        "scipy loop [fits/s]",
        "nlsq speed-up",
        f"{label} speed-up",
        "change (time ratio)",
        "status",
        "nlsq cold [s]",
    ]
    return markdown_table(headers, rows, "lrrlrrrrrlr")


LARGE_NOTE = (
    "`nlsq.curve_fit_large` never forms the Jacobian: it accumulates `J^T J` over chunks "
    "inside the compiled fit. Peak RSS of a fresh process (data included) and its growth "
    "after the imports, against scipy's `curve_fit` and nlsq's in-memory `curve_fit` on "
    "the same model and size (from the size sweep, when measured in this run). Hot times "
    "are CPU seconds per fit."
)


def _in_memory_twin(run: Mapping, entry: Mapping) -> str | None:
    """The plain problem of the same model and size as a chunked one, if measured."""
    spec = entry["problem"]
    for name, other in run["problems"].items():
        o = other["problem"]
        plain = o["variant"] == "plain" and not o.get("chunk_size") and not o.get("batch")
        if plain and o["family"] == spec["family"] and o["n"] == spec["n"]:
            return name
    return None


def large_table(run, figures) -> str:
    """Memory and time of the chunked problems, with scipy and in-memory nlsq."""
    rows = []
    for name, entry, f in _measured(run, figures, "nlsq_rss_mb"):
        if not entry["problem"].get("chunk_size"):
            continue
        twin = _in_memory_twin(run, entry)
        t = figures.get(twin, {}) if twin else {}
        rows.append(
            [
                name,
                _n_label(entry["problem"]["n"]),
                str(entry["problem"]["chunk_size"]),
                _num(f["nlsq_rss_mb"], ".0f"),
                _num(f["nlsq_rss_mb"] - f["nlsq_import_rss_mb"], ".0f"),
                _num(t.get("nlsq_rss_mb"), ".0f"),
                _num(t["nlsq_rss_mb"] - t["nlsq_import_rss_mb"], ".0f") if t else "–",
                _num(f["scipy_rss_mb"], ".0f"),
                _num(f["scipy_rss_mb"] - f["scipy_import_rss_mb"], ".0f"),
                _num(f.get("nlsq_hot_cpu_s"), ".3f"),
                _num(t.get("nlsq_hot_cpu_s"), ".3f"),
                _num(f.get("scipy_hot_cpu_s"), ".3f"),
            ]
        )
    headers = [
        "problem",
        "n",
        "chunk [points]",
        "chunked peak [MiB]",
        "chunked growth [MiB]",
        "in-memory peak [MiB]",
        "in-memory growth [MiB]",
        "scipy peak [MiB]",
        "scipy growth [MiB]",
        "chunked hot [s]",
        "in-memory hot [s]",
        "scipy hot [s]",
    ]
    return markdown_table(headers, rows, "lrrrrrrrrrrr")


def accuracy_table(run, figures, base, index, label: str = "baseline") -> str:
    rows = []
    for name, _, f in _measured(run, figures, "nlsq_error"):
        b = base.get(name, {})
        _, status = _status(index, name, "accuracy")
        rows.append(
            [
                name,
                _num(f["nlsq_error"], ".2e"),
                _num(f["scipy_error"], ".2e"),
                _num(f["agreement"], ".1e"),
                "yes" if f["nlsq_accurate"] else "**no**",
                _num(b.get("nlsq_error"), ".2e"),
                status,
            ]
        )
    headers = [
        "problem",
        "nlsq max error",
        "scipy max error",
        "nlsq vs scipy",
        "nlsq within tolerance",
        f"{label} nlsq error",
        "status",
    ]
    return markdown_table(headers, rows, "lrrrlrl")


def time_split(f: Mapping[str, float]) -> tuple[float, float, float, float]:
    """nlsq's cold CPU seconds as (import, trace/lower/dispatch, XLA compile, run).

    JAX reports compile durations in wall-clock time: the first call's CPU time is split
    in proportion to its wall-clock parts.
    """
    scale = f["first_call_cpu_s"] / f["first_call_s"] if f["first_call_s"] else 1.0
    compile_s = min(f["compile_s"] * scale, f["first_call_cpu_s"])
    run_s = min(f["nlsq_hot_cpu_s"], f["first_call_cpu_s"] - compile_s)
    trace = max(f["first_call_cpu_s"] - compile_s - run_s, 0.0)
    return f["import_cpu_s"], trace, compile_s, run_s


def time_breakdown_table(run, figures) -> str:
    rows = []
    for name, _, f in _measured(run, figures, "first_call_s"):
        if "nlsq_hot_s" not in f:
            continue
        imp, trace, compile_s, run_s = time_split(f)
        rows.append(
            [
                name,
                _num(imp, ".2f"),
                _num(trace, ".2f"),
                _num(compile_s, ".2f"),
                _ms(run_s),
                f"{f['compiles']:g} / {f['disk_hits']:g}",
                f"{100 * compile_s / (imp + trace + compile_s + run_s):.0f}%",
                _num(f["scipy_cold_cpu_s"], ".2f"),
            ]
        )
    headers = [
        "problem",
        "import [s]",
        "trace, lower, dispatch [s]",
        "XLA compile [s]",
        "run [ms]",
        "compiles / disk loads",
        "compile share",
        "scipy cold [s]",
    ]
    return markdown_table(headers, rows, "lrrrrrrr")


def environment_table(env: Mapping[str, Any], settings: Mapping[str, Any]) -> str:
    src = env.get("nlsq_source", {})
    commit = (src.get("commit") or "unknown")[:12] + (
        " + local changes" if src.get("dirty") else ""
    )
    rows = [
        ("date (UTC)", env["timestamp_utc"]),
        ("nlsq", f"{env['nlsq_version']} at {commit} ({src.get('label', '')})"),
        ("python / jax / jaxlib", f"{env['python']} / {env['jax']} / {env['jaxlib']}"),
        ("numpy / scipy", f"{env['numpy']} / {env['scipy']}"),
        ("device", f"{env['jax_device']} ({env['jax_backend']})"),
        ("CPU", f"{env['cpu_model']}, {env['cpu_count']} logical CPUs"),
        ("OS", env["os"]),
        (
            "load average at start / end",
            f"{env.get('load_average_start')} / {env.get('load_average_end')}",
        ),
        ("injected environment", str(env.get("injected_env") or "none")),
        ("cold-start disk cache", env.get("cold_disk_cache", "")),
        ("settings", ", ".join(f"{k}={v}" for k, v in settings.items())),
    ]
    return markdown_table(["", ""], [[k, str(v)] for k, v in rows], "ll")


TIME_NOTE = (
    "Times are medians of CPU time of one-CPU worker processes, the basis the gate judges: "
    "on an idle machine the same as wall-clock time, and hardly inflated when other "
    "processes share the machine. The wall-clock figures are for reference; *change* is "
    "the nlsq/scipy ratio against the baseline's."
)

METHOD = """\
- **Cold**: a fresh Python process per sample, timed from before its first import: import
  of NumPy and the library, then the first `curve_fit` call (for nlsq: trace, XLA compile,
  run). Every nlsq process starts with an **empty temporary persistent-cache directory**
  (`NLSQ_DISK_CACHE_DIR`), except `*-warm-disk` problems, whose processes share a cache
  filled by one untimed run. nlsq and scipy processes alternate (nlsq, scipy, scipy, nlsq…).
- **Hot**: one process per problem; after warm-up, nlsq and scipy fits alternate on fresh
  data (same `x`, new noise) until the time budget is spent; `block_until_ready` on nlsq's
  results; garbage collection off while timing. The ratio is the median of the per-pair
  ratios nlsq/scipy, so load that changes between pairs cancels.
- **Memory**: peak resident set size (`ru_maxrss`) of each cold process after its first fit
  and two more.
- **Accuracy**: largest parameter error against the true parameters
  (`|p - p_true| / max(|p_true|, 1)`) on the same seeded data for both libraries.
- **Compiles**: from `nlsq.cache_info()` (JAX's compile events): programs compiled by the
  first call, and programs compiled or loaded during the hot loop (0 when reuse works).
- **Normalisation and verdicts**: cold and hot are compared as nlsq/scipy ratios of CPU
  time measured in the same run, so a slower machine does not read as a regression, nor do
  other processes taking turns on the worker's CPU. A ratio more than 10% worse than the
  baseline's, and by more than twice the measurement noise (standard error of the median
  of the pair ratios, combined with the baseline's), is a regression; such a problem is
  measured again (up to twice, with more samples, once the machine is quiet) and fails
  only if every attempt does. Other processes still move the ratios through shared caches
  and memory bandwidth, so the 10% grows by 35% per CPU of their measured load; a change
  above 10% but within the noise or that allowance is reported as *noisy*. Memory more
  than 10% worse only warns.
- Scipy uses its defaults (`'lm'` with finite differences for unbounded problems, `'trf'`
  when bounded, `'trf'` for robust losses); nlsq uses `'trf'` with autodiff Jacobians.
- Each worker runs on one CPU (the idlest when it starts) with single-threaded BLAS, so the
  ratio does not depend on how many cores other jobs leave free. With more cores nlsq's
  large-n fits run faster than shown here (XLA uses several threads).
"""


def render(
    run: Mapping[str, Any],
    baseline: Mapping[str, Any] | None = None,
    findings: Sequence[gate.Finding] | None = None,
    plots: Sequence[tuple[str, str]] = (),
    title: str = "nlsq performance report",
    baseline_label: str = "baseline",
) -> str:
    """The report as Markdown.

    Parameters
    ----------
    run, baseline : dict
        Run documents (see :mod:`benchmark.runner`); without a baseline there are no
        change columns and no verdict.
    findings : list of Finding, optional
        From :func:`benchmark.gate.evaluate`; computed when a baseline is given.
    plots : list of (file name, caption)
        PNG files next to the report.
    """
    if baseline is not None and findings is None:
        findings = gate.evaluate(run, baseline)
    findings = list(findings or [])
    index = _finding_index(findings)
    figures = {n: summarise(e) for n, e in run["problems"].items() if not e.get("error")}
    base = {n: _base_figures(baseline, n) for n in run["problems"]}
    env = run["environment"]
    src = env.get("nlsq_source", {})

    out = [f"# {title}", ""]
    stamp = (
        f"Run of {env['timestamp_utc']} on {env['cpu_model']} ({env['jax_backend']}), nlsq "
        f"{(src.get('commit') or 'unknown')[:12]}{' + local changes' if src.get('dirty') else ''}"
    )
    if baseline is not None and baseline_label == "baseline":
        bsrc = baseline["environment"].get("nlsq_source", {})
        stamp += (
            f"; compared with the baseline recorded {baseline['environment']['timestamp_utc']}"
            f" (nlsq {(bsrc.get('commit') or 'unknown')[:12]})"
        )
        for update in baseline["environment"].get("updates", []):
            stamp += (
                f", {_plural(len(update['problems']), 'problem')} of it re-recorded "
                f"{update['timestamp_utc']} (nlsq "
                f"{(update['nlsq_source'].get('commit') or 'unknown')[:12]})"
            )
    elif baseline is not None:
        stamp += f"; compared with {baseline_label}, measured interleaved in the same session"
    out += [f"*{stamp}.*", "", "## Executive summary", ""]
    if baseline is not None:
        result = gate.verdict(findings)
        counts = {s: sum(f.status == s for f in findings) for s in ("regression", "improvement")}
        warn = sum(f.status in gate.WARNING for f in findings)
        errors = sum(f.status == "error" for f in findings)
        against = "the baseline" if baseline_label == "baseline" else baseline_label
        tally = [
            _plural(counts["regression"], "regression"),
            _plural(counts["improvement"], "improvement"),
            _plural(warn, "warning"),
        ] + ([_plural(errors, "error")] if errors else [])
        new = sum(f.status == "new" for f in findings)
        if new:
            tally.append(f"{new} not in {against} (no comparison)")
        out += [
            f"**Verdict: {result}.** {_plural(len(run['problems']), 'problem')} measured "
            f"against {against}: {', '.join(tally)}.",
            "",
        ]
    out += [f"- {line}" for line in _headline(run, figures)]
    notes = gate.environment_notes(run, baseline) if baseline is not None else []
    if notes:
        out += [
            "",
            "Environment differences from the baseline: " + "; ".join(notes) + ".",
        ]
    if findings:
        out += ["", summary_table(findings)]
        notable = [f for f in findings if f.status not in ("ok", "new")]
        if notable:
            out += ["", "Notable findings:", ""]
            out += [
                f"- `{f.problem}` {f.metric}: {STATUS_LABELS.get(f.status, f.status)}"
                f"{' — ' + f.message if f.message else ''}"
                for f in notable
            ]
    errors = {n: e["error"] for n, e in run["problems"].items() if e.get("error")}
    if errors:
        out += ["", "Problems that failed to run:", ""]
        out += [f"- `{n}`: {msg.splitlines()[0]}" for n, msg in errors.items()]

    out += [
        "",
        "## Cold start",
        "",
        TIME_NOTE,
        "",
        cold_table(run, figures, base, index, baseline_label),
    ]
    out += ["", "## Hot fits", "", hot_table(run, figures, base, index, baseline_label)]
    if any(e["problem"].get("batch") for e in run["problems"].values()):
        out += ["", "## Batches of small fits", "", BATCH_NOTE, ""]
        out += [batch_table(run, figures, base, index, baseline_label)]
    out += ["", "## Memory", "", memory_table(run, figures, base, index, baseline_label)]
    if any(e["problem"].get("chunk_size") for e in run["problems"].values()):
        out += ["", "## Large data (chunked)", "", LARGE_NOTE, "", large_table(run, figures)]
    out += ["", "## Accuracy", "", accuracy_table(run, figures, base, index, baseline_label)]
    out += [
        "",
        "## Where the time goes",
        "",
        "nlsq's cold time (CPU seconds) split into import, tracing/lowering/dispatch (the "
        "first call minus compile and run; with a warm disk cache it includes loading the "
        "program), XLA compilation, and the run itself (the hot median). JAX reports compile "
        "durations in wall-clock time, so the first call's CPU time is divided in proportion. "
        "Compiles and disk loads are counted from JAX's compile events during the first call.",
        "",
        time_breakdown_table(run, figures),
    ]
    for file, caption in plots:
        out += ["", f"![{caption}]({file})", "", f"*{caption}*"]
    out += ["", "## How this was measured", "", METHOD.rstrip()]
    out += ["", "## Environment", "", environment_table(env, run["settings"]), ""]
    return "\n".join(out)


def write_report(
    run: Mapping[str, Any],
    out_dir: Path,
    baseline: Mapping[str, Any] | None = None,
    findings: Sequence[gate.Finding] | None = None,
    with_plots: bool = True,
    title: str = "nlsq performance report",
    baseline_label: str = "baseline",
) -> Path:
    """Write ``report.md``, its plots and the run's JSON to ``out_dir``; return the report."""
    if with_plots:
        from benchmark import plots as plotting  # matplotlib only here

        plotting.pyplot()  # fail before writing anything when matplotlib is missing
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots: list[tuple[str, str]] = []
    if with_plots:
        plots = plotting.write_plots(run, out_dir, baseline, baseline_label)
    runner.save(run, out_dir / "run.json")
    path = out_dir / "report.md"
    path.write_text(render(run, baseline, findings, plots, title, baseline_label))
    return path
