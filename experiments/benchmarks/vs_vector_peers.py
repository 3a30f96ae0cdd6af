r"""jaxflows' flows on vectors against flowjax (JAX) and zuko (PyTorch), in one run.

Timed, per dimension ``D`` (``--dims``, default 8 and 64) at batch 512 (``--batch``):

* ``maf_train``: one Adam step of the negative log-likelihood of a MAF (5 layers,
  MADE of two hidden layers of 64 units, affine transformer): jaxflows ``maf``,
  flowjax ``masked_autoregressive_flow`` (``nn_width=64, nn_depth=2, flow_layers=5``),
  zuko ``MAF(transforms=5, hidden_features=(64, 64))``;
* ``nsf_train``: the same for a rational-quadratic spline *coupling* flow (5 layers,
  8 bins on ``[-5, 5]``, conditioner of 64 units): jaxflows ``nsf(kind="coupling")``,
  flowjax ``coupling_flow(transformer=RationalQuadraticSpline(knots=8, interval=5))``,
  zuko ``NSF(passes=2, bins=8)``;
* ``maf_sample``: drawing ``batch`` samples from the MAF (the autoregressive inverse):
  jaxflows with the exact ``lax.scan`` inverse and with the Jacobi fixed-point inverse,
  flowjax, zuko;
* ``iaf_sample``: drawing from an IAF (one MADE pass per layer): jaxflows ``iaf``,
  zuko ``MAF(...).inverse`` orientation is not offered, so jaxflows only, against
  jaxflows' own MAF density pass as the reference cost.

Each timing is the median of ``--repeats`` calls after one warm-up call (JAX: compiled
functions, ``block_until_ready``; torch: ``torch.set_num_threads`` left at its default).
The ratios ``peer / jaxflows`` (> 1: jaxflows faster) are printed per row, and the
compile times of jaxflows' MAF train step and scan sampling against ``D`` (which must not
grow with ``D`` for the scan paths). Results go to ``--out`` (JSON).

Set-up (never upgrading torch or jax: ``--no-deps``)::

    .venv-bench/bin/pip install --no-deps flowjax==19.1.2 equinox==0.13.8 paramax==0.0.5 \
        lineax==0.1.1 jaxtyping wadler_lindig zuko==1.6.0
    .venv-bench/bin/python experiments/benchmarks/vs_vector_peers.py
    .venv-bench/bin/python experiments/benchmarks/vs_vector_peers.py --dims=8 --repeats=2 \
        --batch=64          # a quick check that everything runs

Run final numbers on an idle machine: timings on a shared CPU are not comparable.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time


def _median_time(fn, repeats):
    fn()                                     # warm-up (and compilation)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


# ----------------------------------------------------------------------------- jaxflows


def jaxflows_rows(dim, batch, repeats):
    import jax
    import jax.numpy as jnp
    import optax

    from jaxflows.models import iaf, maf, nsf

    x = jax.random.normal(jax.random.PRNGKey(0), (batch, dim))
    out = {}

    def train_step_time(flow):
        variables = jax.jit(flow.init)({"params": jax.random.PRNGKey(1)}, x)
        params = variables["params"]
        rest = {k: v for k, v in variables.items() if k != "params"}
        tx = optax.adam(1e-3)

        def step(params, opt, x):
            loss, g = jax.value_and_grad(
                lambda p: -jnp.mean(flow.apply({"params": p, **rest}, x)))(params)
            upd, opt = tx.update(g, opt, params)
            return optax.apply_updates(params, upd), opt, loss
        t = time.perf_counter()
        compiled = jax.jit(step).lower(params, tx.init(params), x).compile()
        compile_s = time.perf_counter() - t
        state = [params, tx.init(params)]

        def run():
            p, o, loss = compiled(state[0], state[1], x)
            loss.block_until_ready()
            state[0], state[1] = p, o
        return _median_time(run, repeats), compile_s

    def sample_time(flow):
        variables = jax.jit(flow.init)({"params": jax.random.PRNGKey(1)}, x)
        # non-zero conditioners, so the inverse does real work
        leaves, tree = jax.tree_util.tree_flatten(variables["params"])
        keys = jax.random.split(jax.random.PRNGKey(2), len(leaves))
        leaves = [p + 0.05 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys)]
        variables = dict(variables, params=jax.tree_util.tree_unflatten(tree, leaves))

        def draw(v, key):
            return flow.apply(v, batch, rngs={"sample": key}, method="sample")
        t = time.perf_counter()
        compiled = jax.jit(draw).lower(variables, jax.random.PRNGKey(3)).compile()
        compile_s = time.perf_counter() - t
        return _median_time(lambda: compiled(variables, jax.random.PRNGKey(3))
                            .block_until_ready(), repeats), compile_s

    out["maf_train"], out["maf_train_compile_s"] = train_step_time(
        maf(dim, num_layers=5, hidden_features=(64, 64)))
    out["nsf_train"], out["nsf_train_compile_s"] = train_step_time(
        nsf(dim, kind="coupling", num_layers=5, hidden_features=64, bins=8, bound=5.0))
    out["maf_sample_scan"], out["maf_sample_scan_compile_s"] = sample_time(
        maf(dim, num_layers=5, hidden_features=(64, 64), inverse_method="scan"))
    out["maf_sample_jacobi"], out["maf_sample_jacobi_compile_s"] = sample_time(
        maf(dim, num_layers=5, hidden_features=(64, 64), inverse_method="jacobi"))
    out["iaf_sample"], _ = sample_time(iaf(dim, num_layers=5, hidden_features=(64, 64)))
    return out


# ----------------------------------------------------------------------------- flowjax


def flowjax_rows(dim, batch, repeats):
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import optax
    import paramax
    from flowjax.bijections import RationalQuadraticSpline
    from flowjax.distributions import Normal
    from flowjax.flows import coupling_flow, masked_autoregressive_flow

    x = jax.random.normal(jax.random.PRNGKey(0), (batch, dim))
    base = Normal(jnp.zeros(dim))
    key = jax.random.key(1)
    maf_flow = masked_autoregressive_flow(key, base_dist=base, nn_width=64, nn_depth=2,
                                          flow_layers=5)
    nsf_flow = coupling_flow(key, base_dist=base, flow_layers=5, nn_width=64, nn_depth=2,
                             transformer=RationalQuadraticSpline(knots=8, interval=5))
    out = {}

    def train_time(flow):
        params, static = eqx.partition(flow, eqx.is_inexact_array)
        tx = optax.adam(1e-3)

        @eqx.filter_jit
        def step(params, opt, x):
            def loss_fn(p):
                dist = paramax.unwrap(eqx.combine(p, static))
                return -jnp.mean(dist.log_prob(x))
            loss, g = eqx.filter_value_and_grad(loss_fn)(params)
            upd, opt = tx.update(g, opt, params)
            return eqx.apply_updates(params, upd), opt, loss
        state = [params, tx.init(params)]

        def run():
            p, o, loss = step(state[0], state[1], x)
            loss.block_until_ready()
            state[0], state[1] = p, o
        return _median_time(run, repeats)

    out["maf_train"] = train_time(maf_flow)
    out["nsf_train"] = train_time(nsf_flow)
    sample = eqx.filter_jit(lambda f, k: paramax.unwrap(f).sample(k, (batch,)))
    out["maf_sample"] = _median_time(
        lambda: sample(maf_flow, jax.random.key(3)).block_until_ready(), repeats)
    return out


# ----------------------------------------------------------------------------- zuko


def zuko_rows(dim, batch, repeats):
    import torch
    import zuko

    torch.manual_seed(0)
    x = torch.randn(batch, dim)
    out = {}

    def train_time(flow):
        opt = torch.optim.Adam(flow.parameters(), lr=1e-3)

        def run():
            opt.zero_grad()
            loss = -flow().log_prob(x).mean()
            loss.backward()
            opt.step()
        return _median_time(run, repeats)

    maf_flow = zuko.flows.MAF(features=dim, transforms=5, hidden_features=(64, 64))
    out["maf_train"] = train_time(maf_flow)
    out["nsf_train"] = train_time(zuko.flows.NSF(features=dim, transforms=5, bins=8,
                                                 passes=2, hidden_features=(64, 64)))

    def sample():
        with torch.no_grad():
            maf_flow().sample((batch,))
    out["maf_sample"] = _median_time(sample, repeats)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", default="8,64")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--peers", default="flowjax,zuko")
    parser.add_argument("--out", default="runs/benchmarks/vs_vector_peers.json")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.repeats < 1:
        parser.error("--batch and --repeats must be >= 1")
    peers = [p for p in args.peers.split(",") if p]
    unknown = set(peers) - {"flowjax", "zuko"}
    if unknown:
        parser.error(f"--peers: unknown {sorted(unknown)}; use flowjax and/or zuko")
    results = {}
    for dim in [int(d) for d in args.dims.split(",")]:
        row = {"jaxflows": jaxflows_rows(dim, args.batch, args.repeats)}
        for peer in peers:
            try:
                row[peer] = {"flowjax": flowjax_rows, "zuko": zuko_rows}[peer](
                    dim, args.batch, args.repeats)
            except ImportError as e:
                print(f"{peer} is not installed ({e}); see the set-up in this file's "
                      "docstring", file=sys.stderr)
        results[str(dim)] = row
        j = row["jaxflows"]
        print(f"D={dim}, batch {args.batch}: jaxflows MAF step {j['maf_train'] * 1e3:.2f} ms "
              f"(compile {j['maf_train_compile_s']:.1f} s), NSF step "
              f"{j['nsf_train'] * 1e3:.2f} ms, MAF sample scan "
              f"{j['maf_sample_scan'] * 1e3:.2f} ms / jacobi "
              f"{j['maf_sample_jacobi'] * 1e3:.2f} ms (compile scan "
              f"{j['maf_sample_scan_compile_s']:.1f} s), IAF sample "
              f"{j['iaf_sample'] * 1e3:.2f} ms", flush=True)
        for peer in peers:
            if peer not in row:
                continue
            p = row[peer]
            best_sample = min(j["maf_sample_scan"], j["maf_sample_jacobi"])
            print(f"  {peer}: MAF step {p['maf_train'] * 1e3:.2f} ms (ratio "
                  f"{p['maf_train'] / j['maf_train']:.2f}), NSF step "
                  f"{p['nsf_train'] * 1e3:.2f} ms (ratio {p['nsf_train'] / j['nsf_train']:.2f}),"
                  f" MAF sample {p['maf_sample'] * 1e3:.2f} ms (ratio "
                  f"{p['maf_sample'] / best_sample:.2f})", flush=True)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"batch": args.batch, "repeats": args.repeats, "results": results}, f,
                      indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
