"""Fit on several devices: the data are sharded, each device reduces its share.

``nlsq.curve_fit_large`` splits the data into one block per device on a
``jax.sharding.Mesh`` (axis ``"data"``, ``NamedSharding``); each device accumulates
``J^T J``, ``J^T f`` and the cost of its block, and XLA all-reduces the ``n x n``
sums. The result equals the single-device fit.

Single host, several devices
    Nothing to do: all of ``jax.devices()`` are used (``devices=`` picks others).
    This script forces 4 CPU devices (``XLA_FLAGS``) to show it anywhere.

Several hosts
    Start one process per host, initialise JAX's distributed runtime, and give each
    process its own part of the data (e.g. its slice of the files); every process
    calls ``curve_fit_large`` with the same model and options and gets the same
    result::

        # on every host, with its own rank:
        import jax
        jax.distributed.initialize(
            coordinator_address="host0:1234", num_processes=2, process_id=RANK
        )
        x_local, y_local = load_my_part(RANK)
        popt, pcov = nlsq.curve_fit_large(model, x_local, y_local, p0=p0)

    Run this file that way with ``--coordinator host0:1234 --num-processes 2
    --process-id RANK``: each process then fits its half of the synthetic data.
"""

import argparse
import os

# Added to any XLA flags already set (keeping a device count that is already chosen).
if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = " ".join(
        filter(None, [os.environ.get("XLA_FLAGS"), "--xla_force_host_platform_device_count=4"])
    )

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import nlsq  # noqa: E402


def model(x, a, b, c):
    return a * jnp.exp(-b * x) + c


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--coordinator", default=None)
    parser.add_argument("--num-processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    args = parser.parse_args()
    if args.coordinator:
        jax.distributed.initialize(
            coordinator_address=args.coordinator,
            num_processes=args.num_processes,
            process_id=args.process_id,
        )

    rng = np.random.default_rng(0)
    x = np.linspace(0, 5, args.points)
    y = 2.5 * np.exp(-1.3 * x) + 0.5 + 0.05 * rng.standard_normal(x.size)
    # This process's part of the data (all of it with one process).
    part = np.array_split(np.arange(x.size), jax.process_count())[jax.process_index()]
    x, y = x[part], y[part]

    print(f"devices: {jax.device_count()} ({jax.local_device_count()} local)")
    sharded = nlsq.curve_fit_large(model, x, y, p0=[1.0, 1.0, 0.0], chunk_size=8192)
    print("sharded popt: " + " ".join(f"{v:.10f}" for v in sharded.popt))
    if jax.process_count() == 1:
        single = nlsq.curve_fit_large(model, x, y, p0=[1.0, 1.0, 0.0], devices=1)
        print("single  popt: " + " ".join(f"{v:.10f}" for v in single.popt))
        assert np.allclose(sharded.popt, single.popt, rtol=1e-9)


if __name__ == "__main__":
    main()
