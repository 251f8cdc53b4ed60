"""PNG plots of a run: time against n, throughput of small fits, where cold time goes.

Needs matplotlib (the ``bench`` extra); nothing else in the suite does.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmark.report import _n_label, _sweep_points, summarise, time_split

NLSQ_COLOR, SCIPY_COLOR, BASE_COLOR = "#1f77b4", "#ff7f0e", "#7f7f7f"
BREAKDOWN = (
    ("import", "#9ecae1"),
    ("trace, lower, dispatch", "#fdae6b"),
    ("XLA compile", "#e6550d"),
    ("run", "#31a354"),
)


class MissingMatplotlib(RuntimeError):
    """matplotlib is not installed."""


def pyplot():
    """``matplotlib.pyplot`` on the file-only backend.

    Raises
    ------
    MissingMatplotlib
        If matplotlib is not installed.
    """
    try:
        import matplotlib
    except ImportError as error:
        raise MissingMatplotlib(
            "the report's plots need matplotlib: pip install -e '.[bench]' "
            "(or pass --no-plots for a report without them)"
        ) from error
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 11, "axes.titlesize": 12, "figure.dpi": 110})
    return plt


def _figures(run: Mapping[str, Any] | None) -> dict[str, dict]:
    if run is None:
        return {}
    return {n: summarise(e) for n, e in run["problems"].items() if not e.get("error")}


def time_vs_n(plt, run, baseline, baseline_label: str, path: Path) -> bool:
    """Hot and cold time against n for each model of the size sweep."""
    figures = _figures(run)
    sweep = _sweep_points(run, figures)
    if not sweep:
        return False
    base = _sweep_points(baseline, _figures(baseline)) if baseline else {}
    fig, axes = plt.subplots(2, len(sweep), figsize=(4.2 * len(sweep), 8), squeeze=False)
    rows = (
        ("nlsq_hot_cpu_s", "scipy_hot_cpu_s", 1e3, "hot: time per fit [ms]", "log"),
        ("nlsq_cold_cpu_s", "scipy_cold_cpu_s", 1.0, "cold: import + first fit [s]", "linear"),
    )
    for col, (family, points) in enumerate(sorted(sweep.items())):
        for row, (nkey, skey, scale, label, yscale) in enumerate(rows):
            ax = axes[row][col]
            pts = [(n, f) for n, f in points if nkey in f]
            ns = [n for n, _ in pts]
            ax.plot(ns, [scale * f[nkey] for _, f in pts], "o-", color=NLSQ_COLOR, label="nlsq")
            ax.plot(ns, [scale * f[skey] for _, f in pts], "s-", color=SCIPY_COLOR, label="scipy")
            bpts = [(n, f) for n, f in base.get(family, []) if nkey in f]
            if bpts:
                ax.plot(
                    [n for n, _ in bpts],
                    [scale * f[nkey] for _, f in bpts],
                    "x--",
                    color=BASE_COLOR,
                    label=f"nlsq, {baseline_label}",
                )
            ax.set_xscale("log")
            ax.set_yscale(yscale)
            if yscale == "linear":
                ax.set_ylim(bottom=0)
            ax.set_xticks(ns, [_n_label(n) for n in ns])
            ax.grid(True, which="major", alpha=0.3)
            ax.set_title(f"{family}: {label.split(':')[0]}")
            ax.set_xlabel("n (data points)")
            if col == 0:
                ax.set_ylabel(label.split(": ")[1])
    legend: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, text in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(text, handle)
    fig.legend(legend.values(), legend.keys(), loc="lower center", ncol=3, frameon=False)
    fig.suptitle(
        "Time against data size, nlsq and scipy "
        "(CPU time of one-CPU processes: wall-clock on an idle machine)"
    )
    fig.tight_layout(rect=(0, 0.05, 1, 1))  # leave the bottom strip to the legend
    fig.savefig(path)
    plt.close(fig)
    return True


def _bars(ax, labels: list[str], series: list[tuple[str, str, list[float]]]) -> None:
    """Grouped bars (one group per label, one bar per series) with their values on top."""
    width = 0.8 / len(series)
    xs = range(len(labels))
    for k, (name, color, values) in enumerate(series):
        offset = (k - (len(series) - 1) / 2) * width
        bars = ax.bar([x + offset for x in xs], values, width, color=color, label=name)
        ax.bar_label(bars, labels=[f"{v:,.0f}" for v in values], fontsize=8, padding=2)
    ax.set_xticks(list(xs), labels)
    ax.grid(True, axis="y", alpha=0.3)


def throughput(plt, run, path: Path, sizes=(100, 1_000)) -> bool:
    """Fits per second: small fits one after another (hot), and batches of small fits."""
    figures = _figures(run)
    sweep = _sweep_points(run, figures)
    panels = [n for n in sizes if any(n == m for pts in sweep.values() for m, _ in pts)]
    batches = [
        (name, e["problem"]["batch"])
        for name, e in run["problems"].items()
        if e["problem"].get("batch") and "nlsq_hot_cpu_s" in figures.get(name, {})
    ]
    if not panels and not batches:
        return False
    widths = [4.6] * len(panels) + ([3.2 + 1.4 * len(batches)] if batches else [])
    fig, axes = plt.subplots(
        1,
        len(widths),
        figsize=(sum(widths), 5.0),
        squeeze=False,
        gridspec_kw={"width_ratios": widths},
    )
    for ax, n in zip(axes[0], panels, strict=False):
        families = sorted(f for f, pts in sweep.items() if any(m == n for m, _ in pts))
        figs = {f: dict(sweep[f])[n] for f in families}
        _bars(
            ax,
            families,
            [
                ("nlsq", NLSQ_COLOR, [1 / figs[f]["nlsq_hot_cpu_s"] for f in families]),
                ("scipy", SCIPY_COLOR, [1 / figs[f]["scipy_hot_cpu_s"] for f in families]),
            ],
        )
        ax.tick_params(axis="x", labelrotation=15)
        ax.set_ylim(0, 1.15 * ax.get_ylim()[1])  # room for the labels
        ax.set_title(f"one fit per call, n = {_n_label(n)}")
        ax.set_ylabel("fits per second")
    if batches:
        ax = axes[0][-1]

        def variant_lines(name: str) -> str:
            return run["problems"][name]["problem"]["variant"].replace(", ", "\n")

        labels = [
            "{family}\n{variant}\n{n} points".format(
                **{**run["problems"][name]["problem"], "variant": variant_lines(name)}
            )
            for name, _ in batches
        ]
        _bars(
            ax,
            labels,
            [
                (
                    "nlsq",
                    NLSQ_COLOR,
                    [b / figures[name]["nlsq_hot_cpu_s"] for name, b in batches],
                ),
                (
                    "scipy",
                    SCIPY_COLOR,
                    [b / figures[name]["scipy_hot_cpu_s"] for name, b in batches],
                ),
            ],
        )
        ax.set_yscale("log")
        low, high = ax.get_ylim()
        ax.set_ylim(low, high * 3)  # room for the labels on a log axis
        ax.set_title("batches: nlsq.curve_fit_batch vs a scipy loop")
        ax.set_ylabel("fits per second (log scale)")
    legend: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, text in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(text, handle)
    fig.legend(legend.values(), legend.keys(), loc="lower center", ncol=4, frameon=False)
    fig.suptitle("Throughput of small fits (CPU time of one-CPU processes, program reused)")
    fig.tight_layout(rect=(0, 0.07, 1, 1))  # leave the bottom strip to the legend
    fig.savefig(path)
    plt.close(fig)
    return True


def cold_breakdown(plt, run, path: Path) -> bool:
    """Stacked bars: where each problem's nlsq cold time goes, with scipy's cold time."""
    figures = _figures(run)
    names = [n for n, f in figures.items() if "first_call_s" in f and "nlsq_hot_s" in f]
    if not names:
        return False
    fig, ax = plt.subplots(figsize=(10, 1.8 + 0.34 * len(names)))
    for y, name in enumerate(names):
        f = figures[name]
        parts = time_split(f)
        left = 0.0
        for value, (label, color) in zip(parts, BREAKDOWN, strict=True):
            ax.barh(y, value, left=left, height=0.62, color=color, label=label if y == 0 else None)
            left += value
        ax.plot(
            [f["scipy_cold_cpu_s"]],
            [y],
            marker="|",
            markersize=14,
            mew=2.5,
            color="black",
            label="scipy cold (total)" if y == 0 else None,
        )
    ax.set_yticks(range(len(names)), names, fontsize=9)
    ax.set_ylim(len(names) - 0.5, -0.5)  # first problem on top, no padding
    ax.set_xlabel("CPU seconds in a fresh process (one CPU)")
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_title("Where nlsq's cold time goes (median of fresh processes)")
    height = fig.get_size_inches()[1]
    fig.legend(loc="lower center", ncol=5, fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.45 / height, 1, 1))  # leave the bottom strip to the legend
    fig.savefig(path)
    plt.close(fig)
    return True


def write_plots(
    run: Mapping[str, Any],
    out_dir: Path,
    baseline: Mapping[str, Any] | None = None,
    baseline_label: str = "baseline",
) -> list[tuple[str, str]]:
    """Write the PNGs into ``out_dir``; return (file name, caption) of each.

    Raises
    ------
    MissingMatplotlib
        If matplotlib is not installed.
    """
    plt = pyplot()
    out_dir = Path(out_dir)
    written = []
    if time_vs_n(plt, run, baseline, baseline_label, out_dir / "time_vs_n.png"):
        written.append(("time_vs_n.png", "Hot and cold time against n, nlsq and scipy."))
    if throughput(plt, run, out_dir / "throughput.png"):
        written.append(
            (
                "throughput.png",
                "Fits per second: small data sets one by one, and batches of small fits.",
            )
        )
    if cold_breakdown(plt, run, out_dir / "cold_breakdown.png"):
        written.append(("cold_breakdown.png", "Where nlsq's cold time goes, per problem."))
    return written
