r"""Achieved FLOP/s of a Glow training step against the measured matmul peak of this machine.

1. **Peak**: the best time of a large float32 matrix product ``[n, n] @ [n, n]``
   (``--n``, default 2048; ``2 n^3`` FLOPs) under ``jax.jit`` on the default device, and
   the same in bfloat16 with float32 accumulation (for reference: the CPU's AMX/AVX512-BF16
   units, or a GPU/TPU's tensor cores).
2. **Work of a training step**: XLA's cost analysis (``compiled.cost_analysis()["flops"]``)
   of the library's jitted Glow train step (:func:`jaxflows.train.step.make_steps`,
   Adam). XLA's analysis counts the body of a loop **once**, and the ``K`` flow steps of
   a level are a loop (``nn.scan``), so every ``scan`` in the step's jaxpr is also
   compiled and cost-analysed on its own and ``(length - 1)`` times its FLOPs are added
   (``flops_xla_corrected``). As a cross-check, the FLOPs of the matrix products and
   convolutions alone are counted from the jaxpr (``2 M N K`` per ``dot_general``,
   ``2 B H' W' k_h k_w C_in C_out`` per convolution, scan bodies times their length).
3. **Utilisation** = FLOPs / measured step time (median of ``--repeats`` after warm-up),
   as GFLOP/s and as a fraction of the float32 matmul peak.

Usage::

    .venv-bench/bin/python experiments/benchmarks/utilisation.py
    .venv-bench/bin/python experiments/benchmarks/utilisation.py --steps=16 --hidden=256
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time

from experiments.benchmarks.vs_normflows import BATCH, DATA_HELP, load_images, machine_info


def matmul_peak(n: int, dtype_name: str, repeats: int = 10) -> dict:
    """Best time and GFLOP/s of an ``[n, n] @ [n, n]`` product in ``dtype_name``."""
    import jax
    import jax.numpy as jnp

    dtype = jnp.dtype(dtype_name)
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32).astype(dtype)
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32).astype(dtype)
    f = jax.jit(lambda a, b: jnp.matmul(a, b, preferred_element_type=jnp.float32))
    jax.block_until_ready(f(a, b))
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(f(a, b))
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    best = min(times)
    return {"n": n, "dtype": dtype_name, "best_s": best, "gflops": 2 * n ** 3 / best / 1e9,
            "cpu_over_wall": cpu[times.index(best)] / best}


def _subjaxprs(eqn):
    """Closed or open jaxprs in an equation's params (pjit, custom_vjp, remat, cond...)."""
    from jax.extend import core as jcore

    out = []
    for v in eqn.params.values():
        vals = v if isinstance(v, (tuple, list)) else [v]
        for item in vals:
            if isinstance(item, jcore.ClosedJaxpr):
                out.append(item.jaxpr)
            elif isinstance(item, jcore.Jaxpr):
                out.append(item)
    return out


def _matmul_flops(jaxpr, mult=1) -> float:
    """2 M N K FLOPs of every dot_general / conv in ``jaxpr`` (scan bodies x length)."""
    total = 0.0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
            lhs, rhs = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
            contract = math.prod(lhs[d] for d in lc)
            total += mult * 2.0 * math.prod(eqn.outvars[0].aval.shape) * contract
        elif name == "conv_general_dilated":
            rhs = eqn.invars[1].aval.shape
            dn = eqn.params["dimension_numbers"]
            spatial = math.prod(rhs[d] for d in dn.rhs_spec[2:])
            cin = rhs[dn.rhs_spec[1]] * 1.0
            total += mult * 2.0 * math.prod(eqn.outvars[0].aval.shape) * spatial * cin \
                / eqn.params.get("feature_group_count", 1)
        elif name == "scan":
            total += _matmul_flops(eqn.params["jaxpr"].jaxpr, mult * eqn.params["length"])
        else:
            for sub in _subjaxprs(eqn):
                total += _matmul_flops(sub, mult)
    return total


def _scans(jaxpr):
    """Outermost ``scan`` equations of ``jaxpr`` (searching through nested calls)."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "scan":
            found.append(eqn)
        else:
            for sub in _subjaxprs(eqn):
                found.extend(_scans(sub))
    return found


def _xla_flops(fn, *args) -> float:
    """FLOPs of ``jit(fn)(*args)`` by XLA's cost analysis (loop bodies counted once)."""
    import jax
    ca = jax.jit(fn).lower(*args).compile().cost_analysis()
    ca = ca[0] if isinstance(ca, (list, tuple)) else ca
    return float(ca.get("flops", 0.0))


def glow_step_utilisation(levels, k, hidden, images, warmup, repeats):
    """FLOPs (XLA, scan-corrected, and matmul/conv count) and step time of a Glow train step."""
    import jax
    import jax.numpy as jnp
    import optax
    from jax.extend import core as jcore

    from jaxflows.models import glow
    from jaxflows.train.mesh import make_mesh
    from jaxflows.train.step import make_steps

    flow = glow((28, 28, 1), levels=levels, steps_per_level=k, hidden_channels=hidden)
    steps = make_steps(flow, optax.adam(1e-3), make_mesh(jax.devices()[:1]),
                       num_dims=28 * 28, ema_decay=0.0, use_ema=False, num_samples=1)
    batch = jnp.asarray(images[:BATCH])
    state = steps.init(batch, 0)
    compiled = steps.train.lower(state, batch).compile()
    ca = compiled.cost_analysis()
    ca = ca[0] if isinstance(ca, (list, tuple)) else ca
    flops_xla = float(ca.get("flops", 0.0))

    closed = jax.make_jaxpr(steps.train)(state, batch)
    flops_jaxpr = _matmul_flops(closed.jaxpr)
    correction = 0.0
    for eqn in _scans(closed.jaxpr):
        body = eqn.params["jaxpr"]
        args = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in body.in_avals]
        correction += (eqn.params["length"] - 1) * _xla_flops(jcore.jaxpr_as_fun(body), *args)
    flops = flops_xla + correction

    times = []
    for i in range(warmup + repeats):
        b = jnp.asarray(images[(i * BATCH) % len(images):][:BATCH])
        t0 = time.perf_counter()
        state, metrics = compiled(state, b)
        jax.block_until_ready(metrics["loss"])
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    return {"levels": levels, "K": k, "hidden": hidden, "batch": BATCH,
            "flops_xla_raw": flops_xla, "flops_xla_corrected": flops,
            "flops_matmul_jaxpr": flops_jaxpr, "step_s": step, "step_min_s": min(times),
            "gflops_achieved": flops / step / 1e9}


def main(argv=None):
    """Runs the benchmark for the command line ``argv``, prints the result, writes JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--levels", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4, help="K, flow steps per level")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--n", type=int, default=2048, help="size of the peak matmul")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--data", default="mnist_8k", help=DATA_HELP)
    ap.add_argument("--out", default="runs/benchmarks/utilisation.json")
    args = ap.parse_args(argv)
    from jaxflows.perf import configure_cpu
    cpu_tuning = configure_cpu()   # before JAX's first computation (see jaxflows.perf)
    print(f"cpu tuning: {cpu_tuning}", flush=True)

    import jax
    info = machine_info()
    info.update(jax=jax.__version__, backend=jax.default_backend())
    images = load_images(args.data, BATCH * (args.warmup + args.repeats))
    peak32 = matmul_peak(args.n, "float32")
    peak16 = matmul_peak(args.n, "bfloat16")
    g = glow_step_utilisation(args.levels, args.steps, args.hidden, images, args.warmup,
                              args.repeats)
    g["fraction_of_f32_peak"] = g["gflops_achieved"] / peak32["gflops"]
    try:
        info["loadavg_end"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        pass
    print(f"{info.get('cpu')} ({info.get('cores')} cores), jax {info['jax']} ({info['backend']}), "
          f"{info['date_utc']}, load avg {info.get('loadavg_start')} -> {info.get('loadavg_end')}")
    print(f"peak float32 matmul {args.n}^3: {peak32['gflops']:.0f} GFLOP/s "
          f"(CPU time / wall {peak32['cpu_over_wall']:.2f}); bfloat16 (f32 accumulation): "
          f"{peak16['gflops']:.0f} GFLOP/s")
    print(f"Glow L={g['levels']} K={g['K']} hidden {g['hidden']} batch {g['batch']} train step: "
          f"{g['flops_xla_corrected'] / 1e9:.2f} GFLOP (XLA cost analysis with scan bodies x "
          f"length; raw {g['flops_xla_raw'] / 1e9:.2f}; matmul/conv only from the jaxpr "
          f"{g['flops_matmul_jaxpr'] / 1e9:.2f}), step {g['step_s']:.3f} s -> "
          f"{g['gflops_achieved']:.1f} GFLOP/s = {g['fraction_of_f32_peak']:.1%} of the "
          f"float32 matmul peak")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"machine": info, "args": vars(args), "peak_f32": peak32, "peak_bf16": peak16,
                   "glow": g}, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
