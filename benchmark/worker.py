"""One measurement in a fresh process; prints one JSON line for :mod:`benchmark.runner`.

Modes (``python -m benchmark.worker MODE ...``):

``cold LIB PROBLEM``
    Import NumPy and ``LIB`` (``nlsq`` or ``scipy``), then the first fit: the cost a user
    pays in a new process. Then two more fits, untimed, and the peak resident set size.
``hot PROBLEM``
    Both libraries in one process: after warm-up fits, nlsq and scipy alternate on fresh
    data until the time budget is spent; per-fit times, compiles during the loop, accuracy.
``env``
    Versions and the JAX device.

Only the standard library is imported before the clock starts, so the cold time covers
every import of the fit's own stack.
"""

import time

_T0, _C0 = time.perf_counter(), time.process_time()

import argparse  # noqa: E402  (after the clock starts, on purpose)
import gc  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

#: Prefix of the result line on stdout (anything else printed there is ignored).
RESULT_PREFIX = "NLSQ_BENCH_RESULT "


def _peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _pin_cpu() -> None:
    """Run on the CPUs named in ``NLSQ_BENCH_CPUS`` (set by the runner), before NumPy or JAX
    start their thread pools."""
    cpus = os.environ.get("NLSQ_BENCH_CPUS")
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})


def _emit(result: dict) -> None:
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def _fitter(lib: str, problem):
    """``fit(x, y) -> popt`` of ``lib`` for ``problem``, with everything resolved up front.

    A batch problem's ``fit`` fits every row of ``y`` and returns ``(batch, n_params)``:
    one ``nlsq.curve_fit_batch`` call, or scipy's ``curve_fit`` row by row. A chunked
    problem goes through ``nlsq.curve_fit_large``.
    """
    import numpy as np

    if lib == "nlsq":
        import jax
        import jax.numpy as jnp

        import nlsq

        model, kwargs = problem.model.function(jnp), problem.fit_kwargs()
        if problem.batch:
            call = nlsq.curve_fit_batch
        elif problem.chunk_size:
            call, kwargs = nlsq.curve_fit_large, {**kwargs, "chunk_size": problem.chunk_size}
        else:
            call = nlsq.curve_fit

        def fit(x, y):
            popt, pcov = call(model, x, y, **kwargs)
            jax.block_until_ready((popt, pcov))  # results are on the host already; be sure
            return np.asarray(popt)

        return fit

    import scipy.optimize

    model, kwargs = problem.model.function(np), problem.scipy_kwargs()

    def fit_one(x, y):
        return np.asarray(scipy.optimize.curve_fit(model, x, y, **kwargs)[0])

    if problem.batch:
        return lambda x, y: np.stack([fit_one(x, row) for row in y])
    return fit_one


def _first_fit(popt) -> list[float]:
    """The parameters of one fit (a batch's first) for the JSON: a batch's are too many."""
    return (popt if popt.ndim == 1 else popt[0]).tolist()


def _compile_counts() -> dict:
    import nlsq

    info = nlsq.cache_info()
    return {
        "compiles": info["total_compiles"],
        "disk_hits": info["total_disk_hits"],
        "compile_s": info["total_compile_time_ms"] / 1e3,
    }


def _nlsq_location() -> str:
    import nlsq

    return os.path.realpath(os.path.dirname(nlsq.__file__))


def cold(lib: str, name: str) -> dict:
    """Import ``lib`` and run its first fit; times in seconds from before the imports."""
    import numpy  # noqa: F401

    if lib == "nlsq":
        import jax.numpy  # noqa: F401

        import nlsq  # noqa: F401
    else:
        import scipy.optimize  # noqa: F401
    t_import, c_import = time.perf_counter(), time.process_time()
    rss_import = _peak_rss_mb()

    from benchmark.problems import PROBLEMS, is_accurate, max_error

    problem = PROBLEMS[name]
    fit = _fitter(lib, problem)
    x, y = _dataset(problem, 0)
    t_start, c_start = time.perf_counter(), time.process_time()
    popt = fit(x, y)
    t_end, c_end = time.perf_counter(), time.process_time()
    result = {
        "import_s": t_import - _T0,
        "first_call_s": t_end - t_start,
        "cold_s": (t_import - _T0) + (t_end - t_start),
        # CPU time of all threads: what other processes' load cannot inflate.
        "import_cpu_s": c_import - _C0,
        "first_call_cpu_s": c_end - c_start,
        "cold_cpu_s": (c_import - _C0) + (c_end - c_start),
        "rss_after_import_mb": rss_import,
        "accurate": is_accurate(popt, problem.model),
        "max_error": max_error(popt, problem.model.true),
        "popt": _first_fit(popt),
    }
    if lib == "nlsq":
        result.update(_compile_counts(), nlsq_path=_nlsq_location())
    # Steady state: the peak below covers repeated fits, not only the first one.
    for index in (1, 2):
        fit(*_dataset(problem, index))
    result["peak_rss_mb"] = _peak_rss_mb()
    return result


def _dataset(problem, index: int):
    from benchmark.problems import dataset

    return dataset(problem, index)


def hot(name: str, min_repeats: int, max_repeats: int, budget_s: float) -> dict:
    """Alternate nlsq and scipy fits on fresh data; per-fit seconds of each."""
    from benchmark.problems import PROBLEMS, is_accurate, max_error

    problem = PROBLEMS[name]
    calls = {lib: _fitter(lib, problem) for lib in ("nlsq", "scipy")}
    # Warm-up on data set 0 (compiles nlsq's program); its results give the accuracy.
    x, y = _dataset(problem, 0)
    accuracy = {}
    for lib, fit in calls.items():
        popt = fit(x, y)
        fit(x, y)
        accuracy[lib] = {
            "accurate": is_accurate(popt, problem.model),
            "max_error": max_error(popt, problem.model.true),
            "popt": _first_fit(popt),
        }
    before = _compile_counts()

    times: dict[str, list[float]] = {"nlsq": [], "scipy": []}
    cpu: dict[str, list[float]] = {"nlsq": [], "scipy": []}
    spent = 0.0
    gc.collect()
    gc.disable()  # collector pauses would land on whichever fit happens to trigger them
    try:
        for i in range(max_repeats):
            if i >= min_repeats and spent >= budget_s:
                break
            x, y = _dataset(problem, 1 + i)
            # Alternate which library goes first, so neither always runs on a cold cache.
            order = ("nlsq", "scipy") if i % 2 == 0 else ("scipy", "nlsq")
            for lib in order:
                fit = calls[lib]
                start, cpu_start = time.perf_counter(), time.process_time()
                fit(x, y)
                elapsed = time.perf_counter() - start
                cpu[lib].append(time.process_time() - cpu_start)
                times[lib].append(elapsed)
                spent += elapsed
    finally:
        gc.enable()

    after = _compile_counts()
    return {
        "nlsq_s": times["nlsq"],
        "scipy_s": times["scipy"],
        "nlsq_cpu_s": cpu["nlsq"],
        "scipy_cpu_s": cpu["scipy"],
        # Programs compiled or loaded from disk during the timed loop: 0 when reuse works.
        "loop_compiles": (after["compiles"] - before["compiles"])
        + (after["disk_hits"] - before["disk_hits"]),
        "accuracy": accuracy,
        "nlsq_path": _nlsq_location(),
    }


def environment() -> dict:
    """Library versions and the JAX device of this interpreter."""
    from importlib import metadata

    import jax
    import numpy as np
    import scipy

    import nlsq

    def version(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "unknown"

    device = jax.devices()[0]
    return {
        "python": sys.version.split()[0],
        "jax": jax.__version__,
        "jaxlib": version("jaxlib"),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "nlsq_version": getattr(nlsq, "__version__", "unknown"),
        "nlsq_path": _nlsq_location(),
        "jax_backend": device.platform,
        "jax_device": str(device),
        "jax_device_kind": getattr(device, "device_kind", "unknown"),
    }


def main(argv: list[str] | None = None) -> None:
    _pin_cpu()
    parser = argparse.ArgumentParser(prog="python -m benchmark.worker")
    sub = parser.add_subparsers(dest="mode", required=True)
    p_cold = sub.add_parser("cold")
    p_cold.add_argument("lib", choices=("nlsq", "scipy"))
    p_cold.add_argument("problem")
    p_hot = sub.add_parser("hot")
    p_hot.add_argument("problem")
    p_hot.add_argument("--min-repeats", type=int, default=7)
    p_hot.add_argument("--max-repeats", type=int, default=200)
    p_hot.add_argument("--budget-s", type=float, default=1.5)
    sub.add_parser("env")
    args = parser.parse_args(argv)
    if args.mode == "cold":
        _emit(cold(args.lib, args.problem))
    elif args.mode == "hot":
        _emit(hot(args.problem, args.min_repeats, args.max_repeats, args.budget_s))
    else:
        _emit(environment())


if __name__ == "__main__":
    main()
