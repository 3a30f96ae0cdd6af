r"""Flow++ speed and memory: the MixLogCDF transformer, the train step, the IW bound.

Three measurements (issue "Flow++", section "Speed and memory"):

1. **transformer**: :class:`~jaxflows.bijectors.MixLogCDF` (``K`` components) forward and
   inverse against the :class:`~jaxflows.bijectors.Affine` transformer at the same shape
   (``--shape``, default 64x16x16x12: Flow++'s channel stage on CIFAR-10 at batch 64):
   wall time per call, their ratio, and the inverse's bisection count, maximum
   iterations and residual (``MonotoneInverseInfo``). The inverse is one compiled program
   (geometric bracket expansion in ``lax.while_loop``, a static number of bisection steps
   in ``lax.fori_loop``): no host synchronisation per iteration, which the benchmark
   checks by asserting that the lowered program contains no host callback.
2. **train step**: seconds per optimiser step of ``flowpp_digits.py:small``'s model
   against a Glow of similar parameter count on the same 8x8 digits batch (``--batch``).
3. **IW memory**: XLA's compiled memory analysis (``temp`` = scratch bytes) of
   :func:`jaxflows.train.evaluation.importance_weighted_log_prob` for ``S`` in ``--iw_samples``
   at a fixed ``--iw_chunk`` and batch: it must stay flat in ``S`` (a ``lax.scan`` with a
   running log-sum-exp); wall time grows linearly.

Timings are medians over ``--repeats`` calls after a warm-up call (compile excluded). The
figures depend on the machine and its load: run it on an idle machine.

Usage::

    python experiments/benchmarks/flowpp.py                      # all three, JSON to --out
    python experiments/benchmarks/flowpp.py --parts=iw --iw_samples=64,512,4096
    python experiments/benchmarks/flowpp.py --quick               # tiny sizes (smoke)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
from typing import Dict, List

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.benchmarks.timing import median_time
from jaxflows.bijectors import Affine, MixLogCDF
from jaxflows.models import flowpp, glow
from jaxflows.train.evaluation import importance_weighted_log_prob
from jaxflows.train.mesh import make_mesh
from jaxflows.train.step import make_steps

PARTS = ("transformer", "train", "iw")


def bench_transformer(shape, components: int, repeats: int) -> Dict[str, float]:
    """MixLogCDF vs Affine forward/inverse at ``shape``."""
    mix, aff = MixLogCDF(components), Affine("exp", clamp=1.0)
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, shape)
    p_mix = jax.random.normal(jax.random.fold_in(key, 1), shape + (mix.num_params,))
    p_aff = jax.random.normal(jax.random.fold_in(key, 2), shape + (aff.num_params,))
    f_mix, f_aff = jax.jit(mix.forward), jax.jit(aff.forward)
    i_mix, i_aff = jax.jit(mix.inverse_and_info), jax.jit(aff.inverse)
    y_mix, _ = f_mix(x, p_mix)
    lowered = i_mix.lower(y_mix, p_mix).as_text()
    assert "callback" not in lowered, "the MixLogCDF inverse calls back to the host"
    _, _, info = i_mix(y_mix, p_mix)
    out = {
        "forward_mixlogcdf_s": median_time(lambda: f_mix(x, p_mix), repeats),
        "forward_affine_s": median_time(lambda: f_aff(x, p_aff), repeats),
        "inverse_mixlogcdf_s": median_time(lambda: i_mix(y_mix, p_mix), repeats),
        "inverse_affine_s": median_time(lambda: i_aff(x, p_aff), repeats),
        "inverse_bisection_steps": int(info.num_bisections),
        "inverse_max_iterations": int(jnp.max(info.iterations)),
        "inverse_max_expansions": int(jnp.max(info.expansions)),
        "inverse_max_residual": float(jnp.max(info.residual)),
        "inverse_not_converged": int(jnp.sum(~info.converged)),
    }
    out["forward_ratio"] = out["forward_mixlogcdf_s"] / out["forward_affine_s"]
    out["inverse_ratio"] = out["inverse_mixlogcdf_s"] / out["inverse_affine_s"]
    return out


def _num_params(tree) -> int:
    return int(sum(np.prod(a.shape) for a in jax.tree_util.tree_leaves(tree)))


def bench_train(batch: int, repeats: int, quick: bool) -> Dict[str, Dict[str, float]]:
    """Seconds per train step: Flow++ (digits :small) vs a Glow of similar size."""
    shape, bins = (8, 8, 1), 17
    small = dict(components=4, hidden_channels=16, num_blocks=1, heads=2, dropout=0.2,
                 layout="checkerboard*2,squeeze,channel*2,checkerboard*2",
                 dequantizer_steps=2, dequantizer_blocks=1, context_channels=8,
                 context_blocks=1)
    if quick:
        small.update(hidden_channels=8, layout="checkerboard,squeeze,channel")
    models = {"flowpp": flowpp(shape, num_bins=bins, **small),
              "glow": glow(shape, levels=2, steps_per_level=4,
                           hidden_channels=16 if quick else 40, num_bins=bins,
                           dropout=0.2, preprocessing="logit")}
    images = jax.random.randint(jax.random.PRNGKey(0), (batch,) + shape, 0, bins)
    images = images.astype(jnp.uint8)
    out = {}
    for name, flow in models.items():
        steps = make_steps(flow, optax.adam(1e-3), make_mesh(), num_dims=64, ema_decay=0.999,
                           use_ema=True, num_samples=4)
        state = steps.init(images, 0)
        n = _num_params(state.params)
        holder = {"state": state}

        def one(steps=steps, holder=holder):
            holder["state"], m = steps.train(holder["state"], images)
            return m["loss"]
        out[name] = {"params": n, "step_s": median_time(one, repeats)}
    out["ratio_flowpp_over_glow"] = out["flowpp"]["step_s"] / out["glow"]["step_s"]
    return out


def bench_iw(samples: List[int], chunk: int, batch: int, repeats: int,
             quick: bool) -> List[Dict[str, float]]:
    """Compiled scratch memory and time of the IW bound as ``S`` grows."""
    shape, bins = (8, 8, 1), 17
    flow = flowpp(shape, num_bins=bins, components=4, hidden_channels=8 if quick else 16,
                  num_blocks=1, heads=2, layout="checkerboard*2,squeeze,channel*2",
                  dequantizer_steps=2, dequantizer_blocks=1, context_channels=8,
                  context_blocks=1)
    images = jax.random.randint(jax.random.PRNGKey(0), (batch,) + shape, 0, bins)
    variables = jax.jit(lambda k: flow.init({"params": jax.random.PRNGKey(1),
                                             "dequantize": jax.random.PRNGKey(2)}, k,
                                            method="dequantized_log_prob"))(images)
    rows = []
    for s in samples:
        fn = jax.jit(lambda v, k, s=s: importance_weighted_log_prob(
            flow, v, k, jax.random.PRNGKey(3), s, chunk=min(chunk, s)))
        mem = fn.lower(variables, images).compile().memory_analysis()
        temp = getattr(mem, "temp_size_in_bytes", None) if mem is not None else None
        rows.append({"S": s, "chunk": min(chunk, s), "temp_bytes": temp,
                     "seconds": median_time(lambda fn=fn: fn(variables, images), repeats)})
    return rows


def main(argv=None) -> int:
    """Runs the selected parts, prints a summary and writes JSON to ``--out``."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", default=",".join(PARTS))
    ap.add_argument("--shape", default="64,16,16,12", help="transformer input shape")
    ap.add_argument("--components", type=int, default=32)
    ap.add_argument("--batch", type=int, default=64, help="train / IW batch")
    ap.add_argument("--iw_samples", default="64,256,1024,4096")
    ap.add_argument("--iw_chunk", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, 1 repeat (smoke test)")
    ap.add_argument("--out", default="runs/benchmarks/flowpp.json")
    args = ap.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    for p in parts:
        if p not in PARTS:
            ap.error(f"--parts: unknown part {p!r}; choose from {PARTS}")
    shape = tuple(int(d) for d in args.shape.split(","))
    samples = [int(s) for s in args.iw_samples.split(",")]
    repeats, batch = args.repeats, args.batch
    if args.quick:
        shape, repeats, batch, samples = (2, 4, 4, 4), 1, 4, [8, 32]
    result = {"machine": platform.platform(), "devices": str(jax.devices()),
              "args": vars(args)}
    if "transformer" in parts:
        result["transformer"] = r = bench_transformer(shape, args.components, repeats)
        print(f"MixLogCDF K={args.components} at {shape}: forward x{r['forward_ratio']:.1f}, "
              f"inverse x{r['inverse_ratio']:.1f} the affine time; inverse "
              f"{r['inverse_bisection_steps']} bisection steps (max active "
              f"{r['inverse_max_iterations']}), max residual {r['inverse_max_residual']:.2g}, "
              f"{r['inverse_not_converged']} not converged")
    if "train" in parts:
        result["train"] = r = bench_train(batch, repeats, args.quick)
        print(f"train step, batch {batch}: flowpp {r['flowpp']['step_s']:.3f} s "
              f"({r['flowpp']['params']} params), glow {r['glow']['step_s']:.3f} s "
              f"({r['glow']['params']} params), ratio {r['ratio_flowpp_over_glow']:.2f}")
    if "iw" in parts:
        result["iw"] = rows = bench_iw(samples, args.iw_chunk, batch, repeats, args.quick)
        for row in rows:
            print(f"IW bound S={row['S']:5d} chunk={row['chunk']}: temp "
                  f"{row['temp_bytes']} bytes, {row['seconds']:.3f} s")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
