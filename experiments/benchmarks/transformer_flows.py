r"""Transformer flows: sampling time against tokens, compile time against depth, remat memory.

1. **Sampling time vs tokens ``T``** (``--sizes``: image sides, patch ``--patch``): a
   TarFlow (``--blocks`` blocks of ``--layers`` layers, width ``--width``) sampled with the
   exact sequential inverse (``"scan"``: ``T - 1`` one-token transformer steps per block
   with a key/value cache), plain Jacobi (``"jacobi"``: full parallel passes until the
   fixed point, at most ``T + 1``) and Gauss-Seidel-Jacobi (``"gsj"``, chunks of
   ``--chunk`` tokens), to the tolerance ``--tol`` (default 4 eps: exact to round-off;
   a looser one stops earlier). Median wall time of ``--repeats`` calls after compilation, the
   largest difference to the sequential samples, and the Jacobi passes per block. The
   parameters are the initial ones perturbed by ``--perturb`` (a trained model has a
   stronger token-to-token dependence, so Jacobi then needs more passes: the pass counts
   are reported with the times).
2. **Compile and train-step time vs depth** (``--depths``): ``jax.jit`` of the
   value-and-gradient of the mean negative log-likelihood of a TarFlow (blocks) and a
   Jet (couplings), compile seconds (lowering + XLA) and median step seconds. With
   ``nn.scan`` the compile time must stay flat in depth.
3. **Peak memory with and without remat** (Jet, ``--depths`` max): XLA's
   ``memory_analysis()`` temporary bytes of the compiled train step.

Usage::

    python experiments/benchmarks/transformer_flows.py                  # defaults
    python experiments/benchmarks/transformer_flows.py --sizes=8,16 --depths=2,4 --repeats=2

Writes ``runs/benchmarks/transformer_flows.json`` (``--out``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

from experiments.benchmarks.timing import median_time


def sampling(args):
    import jax
    import jax.numpy as jnp

    from jaxflows.models import tarflow
    from jaxflows.testing import perturb_params

    rows = []
    for side in args.sizes:
        shape = (side, side, 1)
        common = dict(patch_size=args.patch, channels=args.width, blocks=args.blocks,
                      layers_per_block=args.layers, heads=max(1, args.width // 32))
        base = tarflow(shape, **common)
        x = jnp.zeros((args.batch,) + shape) + 128.0
        v = perturb_params(base.init(jax.random.PRNGKey(0), x), jax.random.PRNGKey(1),
                           args.perturb)
        tokens = (side // args.patch) ** 2
        row = {"side": side, "tokens": tokens}
        ref = None
        jac = dict(inverse_method="jacobi", tol=args.tol)
        methods = {"scan": {}, "jacobi": jac, "gsj": dict(jac, chunk_size=args.chunk)}
        for name, kw in ((m, methods[m]) for m in args.methods):
            flow = tarflow(shape, **common, **kw)
            fn = jax.jit(lambda v, k, f=flow: f.apply(
                v, args.batch, method=f.sample, rngs={"sample": k},
                mutable=["intermediates"]))
            key = jax.random.PRNGKey(2)
            row[f"{name}_s"] = median_time(lambda fn=fn, v=v, key=key: fn(v, key), args.repeats)
            out, state = fn(v, key)
            if ref is None:
                ref = out
            else:
                row[f"{name}_max_diff"] = float(jnp.max(jnp.abs(out - ref)))
                its = [int(jnp.max(leaf)) for path, leaf in
                       jax.tree_util.tree_flatten_with_path(state)[0]
                       if "iterations" in jax.tree_util.keystr(path)]
                row[f"{name}_max_passes_per_block"] = max(its)
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def depth(args):
    import jax
    import jax.numpy as jnp

    from jaxflows.models import jet, tarflow

    shape = (args.depth_side, args.depth_side, 1)
    x = jax.random.uniform(jax.random.PRNGKey(0), (args.batch,) + shape, maxval=256.0)
    rows = []
    for model in ("tarflow", "jet"):
        for d in args.depths:
            for remat in ((False, True) if model == "jet" else (False,)):
                if model == "tarflow":
                    flow = tarflow(shape, patch_size=args.patch, channels=args.width,
                                   blocks=d, layers_per_block=args.layers,
                                   heads=max(1, args.width // 32), remat=remat)
                else:
                    flow = jet(shape, patch_size=args.patch, width=args.width, couplings=d,
                               block_depth=args.layers, heads=max(1, args.width // 32),
                               remat=remat)
                v = flow.init(jax.random.PRNGKey(1), x)

                def loss(p, v=v, flow=flow):
                    return -jnp.mean(flow.apply(dict(v, params=p), x))

                step = jax.jit(jax.value_and_grad(loss))
                t0 = time.perf_counter()
                compiled = step.lower(v["params"]).compile()
                compile_s = time.perf_counter() - t0
                mem = compiled.memory_analysis()
                temp = getattr(mem, "temp_size_in_bytes", None) if mem is not None else None
                step_s = median_time(lambda c=compiled, v=v: c(v["params"]), args.repeats)
                row = {"model": model, "depth": d, "remat": remat,
                       "compile_s": round(compile_s, 3), "step_s": round(step_s, 4),
                       "temp_bytes": temp}
                rows.append(row)
                print(json.dumps(row), flush=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ints = lambda s: [int(v) for v in s.split(",")]
    p.add_argument("--sizes", type=ints, default=[8, 16, 32])
    p.add_argument("--patch", type=int, default=2)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--blocks", type=int, default=2)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--chunk", type=int, default=16)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--methods", type=lambda s: s.split(","), default=["scan", "jacobi", "gsj"],
                   help="inverses to time, the first is the reference (scan, jacobi, gsj)")
    p.add_argument("--tol", type=float, default=None,
                   help="Jacobi tolerance (default: 4 eps, the exact inverse)")
    p.add_argument("--perturb", type=float, default=0.05)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--depths", type=ints, default=[2, 4, 8])
    p.add_argument("--depth_side", type=int, default=16)
    p.add_argument("--skip_sampling", action="store_true")
    p.add_argument("--skip_depth", action="store_true")
    p.add_argument("--out", default="runs/benchmarks/transformer_flows.json")
    args = p.parse_args(argv)
    if args.methods[:1] != ["scan"] or not set(args.methods) <= {"scan", "jacobi", "gsj"}:
        p.error(f"--methods: 'scan' (the reference) first, then any of jacobi, gsj; got "
                f"{','.join(args.methods)}")
    import jax
    result = {"device": jax.devices()[0].device_kind, "platform": platform.platform(),
              "args": vars(args)}
    if not args.skip_sampling:
        result["sampling"] = sampling(args)
    if not args.skip_depth:
        result["depth"] = depth(args)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
