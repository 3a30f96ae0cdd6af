r"""Attention flows: test-time cost against the backbone, and which LipNorm bound is a bound.

Two measurements (issue 18):

``speed`` (default): test time per image of AttnFlow-iMap and AttnFlow-iTrans against
their backbone without attention (the AttnFlow supplement's Table 1 reports 0.48 s for
mARFlow, 0.50 s for iMap and 0.61 s for iTrans per CIFAR-10 image on a TITAN RTX). For
each backbone in ``--backbones`` (``mar_scf``, ``glow``) the same flow is built three
times, without attention (``attention`` removed: the backbone factory itself), with iMap
and with iTrans (``--heads`` heads over tokens of half the side), all at pos-4, and the
median wall time of ``--repeats`` jitted calls (after compilation) of

* ``log_prob``: density evaluation of a batch of ``--batch`` images, and
* ``sample``: ``--batch`` samples (MARPS for mAR-SCF),

is divided by the batch size; the ratios ``iMap / backbone`` and ``iTrans / backbone``
are printed. The defaults are a tiny setting that runs on a CPU in a minute; the paper's
setting is ``--size=32 --channels=3 --levels=3 --steps=4 --hidden=256 --blocks=10``
(a GPU job). Do not read final numbers off a loaded machine.

``bounds``: the empirical check of ACF's LipNorm normalisers. A small ACF (``digits``,
Residual Flow blocks with LipNorm attention between the convolutions) is trained for
``--train_steps`` Adam steps with each normaliser (``derived``: this library's bound;
``paper``: ACF Eq. 15's constant 10.55); then for every attention block of the trained
model the largest singular value of the exact Jacobian of ``F / L`` (its attention
output divided by its normaliser) is computed by SVD at ``--points`` random inputs of
the block's hidden shape (several scales). A normaliser that is a Lipschitz bound gives
a maximum <= 1.

Usage::

    python experiments/benchmarks/attention.py                         # speed, tiny
    python experiments/benchmarks/attention.py --mode=bounds --train_steps=100

Writes ``runs/benchmarks/attention_<mode>.json`` (``--out``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
from typing import Dict

import numpy as np

from experiments.benchmarks.timing import median_time


def _flow(backbone: str, attention: str, args):
    from jaxflows.models import attnflow, glow, mar_scf
    shape = (args.size, args.size, args.channels)
    if attention == "none":
        if backbone == "glow":
            return glow(shape, levels=args.levels, steps_per_level=args.steps,
                        hidden_channels=args.hidden)
        return mar_scf(shape, levels=args.levels, steps_per_level=args.steps,
                       coupling="mixlogcdf", hidden_channels=args.hidden,
                       num_blocks=args.blocks, components=args.components,
                       heads=args.conditioner_heads)
    kw = dict(backbone=backbone, attention=attention, position=4, levels=args.levels,
              steps_per_level=args.steps, hidden_channels=args.hidden)
    if attention == "itrans":
        kw.update(heads=args.heads, patch_size="half")
    if backbone == "mar_scf":
        kw.update(coupling="mixlogcdf", num_blocks=args.blocks, components=args.components,
                  conditioner_heads=args.conditioner_heads)
    return attnflow(shape, **kw)


def _time_flow(flow, x, key, args) -> Dict:
    """Per-image ``log_prob`` and ``sample`` times of ``flow`` (jitted, after compiling)."""
    import jax
    variables = jax.jit(flow.init)({"params": key, "dropout": key}, x)
    log_prob = jax.jit(lambda v, x: flow.apply(v, x, method=flow.log_prob))
    sample = jax.jit(lambda v, k: flow.apply(v, args.batch, method=flow.sample,
                                             rngs={"sample": k}))
    t_lp = median_time(lambda: log_prob(variables, x), args.repeats) / args.batch
    t_s = median_time(lambda: sample(variables, key), args.repeats) / args.batch
    params = sum(a.size for a in jax.tree_util.tree_leaves(variables["params"]))
    return {"log_prob_s_per_image": t_lp, "sample_s_per_image": t_s, "params": int(params)}


def speed(args) -> Dict:
    import jax
    import jax.numpy as jnp
    key = jax.random.PRNGKey(0)
    x = jax.random.uniform(key, (args.batch, args.size, args.size, args.channels)) * 255.0
    results = {}
    for backbone in args.backbones.split(","):
        row = {}
        for attention in ("none", "imap", "itrans"):
            row[attention] = _time_flow(_flow(backbone, attention, args), x, key, args)
            t_lp, t_s = row[attention]["log_prob_s_per_image"], row[attention]["sample_s_per_image"]
            params = row[attention]["params"]
            print(f"{backbone:8s} {attention:7s} log_prob {t_lp * 1e3:9.3f} ms/image   "
                  f"sample {t_s * 1e3:9.3f} ms/image   params {params:,}", flush=True)
        for attention in ("imap", "itrans"):
            for what in ("log_prob_s_per_image", "sample_s_per_image"):
                ratio = row[attention][what] / row["none"][what]
                row[attention][what.replace("_s_per_image", "_ratio")] = ratio
            print(f"{backbone:8s} {attention:7s} / backbone: log_prob "
                  f"{row[attention]['log_prob_ratio']:.2f}x, sample "
                  f"{row[attention]['sample_ratio']:.2f}x   (paper, CIFAR-10 test time: "
                  f"iMap 0.50/0.48 = 1.04x, iTrans 0.61/0.48 = 1.27x)", flush=True)
        results[backbone] = row
    del jnp
    return results


def _attention_blocks(params, prefix=()):
    """``(path, params)`` of every ``attention`` submodule; scanned blocks are unstacked."""
    out = []
    for k, v in params.items():
        if k == "attention":
            leaves = {n: np.asarray(a) for n, a in v.items()}
            if leaves["gamma"].ndim == 0:
                out.append((prefix, leaves))
            else:
                for i in range(leaves["gamma"].shape[0]):
                    out.append((prefix + (i,), {n: a[i] for n, a in leaves.items()}))
        elif hasattr(v, "items"):
            out.extend(_attention_blocks(v, prefix + (k,)))
    return out


def _train_acf(flow, data, args):
    """``args.train_steps`` Adam steps of ``flow`` on dequantised ``data`` (bits/dim loss,
    training estimators, power iterations updated); returns ``(params, last loss)``.
    """
    import jax
    import jax.numpy as jnp
    import optax
    key = jax.random.PRNGKey(args.seed)
    variables = flow.init({"params": key, "logdet": key}, data[:64])
    params = variables["params"]
    state = {k: v for k, v in variables.items() if k != "params"}
    opt = optax.adam(args.lr)
    opt_state = opt.init(params)
    dims = math.prod(data.shape[1:])

    @jax.jit
    def step(params, state, opt_state, key):
        k1, k2, k3 = jax.random.split(key, 3)
        idx = jax.random.randint(k1, (64,), 0, data.shape[0])
        x = data[idx] + jax.random.uniform(k2, data[idx].shape)

        def loss(p):
            lp, new = flow.apply({"params": p, **state}, x, train=True, rngs={"logdet": k3},
                                 mutable=["lipschitz"])
            return -jnp.mean(lp) / (dims * math.log(2)), new
        (value, new), grads = jax.value_and_grad(loss, has_aux=True)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), {**state, **new}, opt_state, value

    value = jnp.nan
    for i in range(args.train_steps):
        params, state, opt_state, value = step(params, state, opt_state,
                                               jax.random.PRNGKey(1000 + i))
    return params, value


def bounds(args) -> Dict:
    import jax
    import jax.numpy as jnp
    from sklearn.datasets import load_digits

    from jaxflows.models import acf
    from jaxflows.nn.attention import LipNormAttention

    images = load_digits().images[:1500, :, :, None]       # scikit-learn's digits, 0..16
    results = {}
    for bound in ("derived", "paper"):
        flow = acf((8, 8, 1), num_bins=17, attention="lipnorm", heads=args.heads, bound=bound,
                   levels=2, blocks_per_level=2, hidden_channels=args.hidden, fc_blocks=0,
                   squeeze_first=True, factor_out=True, spectral_norm=dict(init_iterations=20))
        params, value = _train_acf(flow, jnp.asarray(images, jnp.float32), args)
        blocks = _attention_blocks(jax.device_get(params))
        module = LipNormAttention(heads=args.heads, residual=False, bound=bound)

        def one(v, z, m=module):
            return m.apply(v, z[None])[0]
        jac = jax.jit(jax.vmap(jax.jacfwd(one, argnums=1), in_axes=(None, 0)))
        worst, per_block = 0.0, []
        rng = np.random.default_rng(args.seed)
        for path, p in blocks:
            level = 0 if any("steps_0" in str(s) for s in path) else 1
            side = 4 >> level                          # 8x8 digits, squeeze first
            d = p["query"].shape[1]
            variables_a = {"params": {k: jnp.asarray(v) for k, v in p.items()}}
            xs = np.concatenate([s * rng.standard_normal((args.points, side, side, d))
                                 for s in (0.1, 1.0, 10.0)]).astype(np.float32)
            n = side * side * d
            j = np.asarray(jac(variables_a, jnp.asarray(xs)), np.float64).reshape(len(xs), n, n)
            sv = float(np.max(np.linalg.svd(j, compute_uv=False)[:, 0]))
            per_block.append({"path": "/".join(map(str, path)), "gamma": float(p["gamma"]),
                              "max_jacobian_norm": sv})
            worst = max(worst, sv)
        results[bound] = {"max_jacobian_norm_of_F_over_L": worst, "blocks": per_block,
                          "final_loss_bpd": float(value), "is_a_bound": worst <= 1.0}
        verdict = "<= 1: a bound here" if worst <= 1 else "> 1: NOT a bound"
        print(f"LipNorm bound={bound:8s}: max over {len(blocks)} trained blocks of "
              f"||J(F/L)||_2 = {worst:.4g} ({verdict}); train loss {float(value):.3f} "
              f"bits/dim after {args.train_steps} steps", flush=True)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("speed", "bounds"), default="speed")
    parser.add_argument("--backbones", default="mar_scf,glow")
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--levels", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--blocks", type=int, default=1, help="Flow++ conditioner blocks")
    parser.add_argument("--components", type=int, default=4)
    parser.add_argument("--conditioner_heads", type=int, default=2)
    parser.add_argument("--heads", type=int, default=5, help="iTrans / LipNorm heads")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--train_steps", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--points", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    if args.mode == "bounds" and args.heads == 5:
        args.heads = 1
    import jax
    results = speed(args) if args.mode == "speed" else bounds(args)
    out = args.out or os.path.join("runs", "benchmarks", f"attention_{args.mode}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"args": vars(args), "results": results, "jax": jax.__version__,
                   "device": str(jax.devices()[0]), "platform": platform.platform()},
                  f, indent=1)
    print(f"wrote {out}")
    return results


if __name__ == "__main__":
    main()
