r"""Compile time and step time of a Glow training step against the depth K.

jaxflows builds the ``K`` steps of a level as one :class:`~jaxflows.bijectors.Repeat`
(``nn.scan``): the step is traced and compiled once per level whatever ``K``, so the
compile time should stay flat in ``K`` (target: ``compile(K=32) <= 1.5 compile(K=4)``)
while the run time grows linearly (``step(K) ~ a + b K``: the levels' fixed costs plus
``K`` steps).

For each ``K`` in ``--depths`` (default 4, 8, 16, 32) it builds ``glow((28, 28, 1),
levels=2, steps_per_level=K, hidden_channels=128)`` (``--hidden``, ``--levels``), the
library's jitted train step (:func:`jaxflows.train.step.make_steps`, Adam), and measures

* ``trace_s``: ``jit(train).lower(state, batch)`` (Python tracing + StableHLO);
* ``compile_s``: ``.compile()`` of that (XLA);
* ``step_s``: median (and min) wall time of ``--repeats`` steps after ``--warmup``;
* the HLO size (characters of the optimised HLO text) as a machine-independent check.

Then prints a table, the ratios ``compile(K_max) / compile(K_min)`` and ``step(K_max) /
step(K_min)``, a least-squares fit ``step = a + b K`` with its largest relative
residual, and writes JSON.

Usage::

    .venv-bench/bin/python experiments/benchmarks/compile_depth.py
    .venv-bench/bin/python experiments/benchmarks/compile_depth.py --depths=4,8 --repeats=3
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import numpy as np

from experiments.benchmarks.vs_normflows import BATCH, DATA_HELP, load_images, machine_info


def measure(k: int, levels: int, hidden: int, images: np.ndarray, warmup: int, repeats: int):
    """Trace, compile and step times and HLO size of the Glow train step with depth ``k``."""
    import jax
    import jax.numpy as jnp
    import optax

    from jaxflows.models import glow
    from jaxflows.train.mesh import make_mesh
    from jaxflows.train.step import make_steps

    flow = glow((28, 28, 1), levels=levels, steps_per_level=k, hidden_channels=hidden)
    steps = make_steps(flow, optax.adam(1e-3), make_mesh(jax.devices()[:1]),
                       num_dims=28 * 28, ema_decay=0.0, use_ema=False, num_samples=1)
    batch = jnp.asarray(images[:BATCH])
    state = steps.init(batch, 0)
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    lowered = steps.train.lower(state, batch)
    trace_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0
    hlo_chars = len(compiled.as_text())
    times = []
    for i in range(warmup + repeats):
        b = jnp.asarray(images[(i * BATCH) % len(images):][:BATCH])
        t0 = time.perf_counter()
        state, metrics = compiled(state, b)
        jax.block_until_ready(metrics["loss"])
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return {"K": k, "trace_s": trace_s, "compile_s": compile_s, "hlo_chars": hlo_chars,
            "step_s": statistics.median(times), "step_min_s": min(times), "times_s": times,
            "loss_bpd": float(metrics["loss"])}


def main(argv=None):
    """Runs the benchmark for the command line ``argv``, prints the table, writes JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--depths", default="4,8,16,32")
    ap.add_argument("--levels", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--data", default="mnist_8k", help=DATA_HELP)
    ap.add_argument("--out", default="runs/benchmarks/compile_depth.json")
    args = ap.parse_args(argv)
    from jaxflows.perf import configure_cpu
    cpu_tuning = configure_cpu()   # before JAX's first computation (see jaxflows.perf)
    print(f"cpu tuning: {cpu_tuning}", flush=True)
    depths = [int(d) for d in args.depths.split(",") if d]
    if not depths or min(depths) < 1:
        raise ValueError(f"--depths must be positive integers, got {args.depths!r}")

    import jax
    info = machine_info()
    info.update(jax=jax.__version__, backend=jax.default_backend())
    images = load_images(args.data, BATCH * (args.warmup + args.repeats))
    rows = []
    for k in depths:
        print(f"[{time.strftime('%H:%M:%S')}] K={k} ...", flush=True)
        rows.append(measure(k, args.levels, args.hidden, images, args.warmup, args.repeats))
        r = rows[-1]
        print(f"    trace {r['trace_s']:.1f} s, compile {r['compile_s']:.1f} s, "
              f"step {r['step_s']:.3f} s", flush=True)
    try:
        info["loadavg_end"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        pass

    ks = np.array([r["K"] for r in rows], float)
    st = np.array([r["step_s"] for r in rows])
    summary = {}
    if len(rows) >= 2:
        a, b = np.linalg.lstsq(np.stack([np.ones_like(ks), ks], 1), st, rcond=None)[0]
        fit = a + b * ks
        summary = {
            "compile_ratio": rows[-1]["compile_s"] / rows[0]["compile_s"],
            "trace_plus_compile_ratio": ((rows[-1]["compile_s"] + rows[-1]["trace_s"])
                                         / (rows[0]["compile_s"] + rows[0]["trace_s"])),
            "step_ratio": rows[-1]["step_s"] / rows[0]["step_s"],
            "depth_ratio": rows[-1]["K"] / rows[0]["K"],
            "fit_intercept_s": float(a), "fit_per_step_s": float(b),
            "fit_max_rel_residual": float(np.max(np.abs(st - fit) / st)),
        }

    print(f"\nGlow L={args.levels}, hidden {args.hidden}, batch {BATCH}, 28x28x1; "
          f"{info.get('cpu')} ({info.get('cores')} cores), jax {info['jax']}, "
          f"{info['date_utc']}, load avg {info.get('loadavg_start')} -> {info.get('loadavg_end')}")
    print("| K | trace s | compile s | optimised HLO (chars) | step s (median) | step s (min) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['K']} | {r['trace_s']:.1f} | {r['compile_s']:.1f} | {r['hlo_chars']:,} | "
              f"{r['step_s']:.3f} | {r['step_min_s']:.3f} |")
    if summary:
        print(f"compile(K={rows[-1]['K']}) / compile(K={rows[0]['K']}) = "
              f"{summary['compile_ratio']:.2f} (target <= 1.5; trace+compile "
              f"{summary['trace_plus_compile_ratio']:.2f}); step ratio {summary['step_ratio']:.2f} "
              f"for a depth ratio {summary['depth_ratio']:.0f}; fit step = "
              f"{summary['fit_intercept_s']:.3f} + {summary['fit_per_step_s']:.4f} K s "
              f"(max relative residual {summary['fit_max_rel_residual']:.1%})")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"machine": info, "args": vars(args), "rows": rows, "summary": summary}, f,
                  indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
