"""VAE on binarised MNIST digits with a Gaussian, IAF-affine or IAF-DSF posterior.

    python experiments/vae.py --steps=3000 --out=runs/vae_table.md
    python experiments/vae.py --posteriors=gaussian,iaf_dsf --seeds=0,1 --steps=2000

The NAF paper's VAE comparison (Huang et al. 2018, Table 3; IAF: Kingma et al. 2016,
Table 2) at laptop scale: the 8,000 real MNIST digits shipped in ``jaxflows.data``
(``mnist_8k``: the first 7,200 for training, the last 800 for test), binarised once
with a fixed seed (pixel ``k`` is 1 with probability ``k / 255``: the stochastic
binarisation of Salakhutdinov & Murray 2008, drawn once, so every model sees the same
binary data). Every posterior trains for the same number of steps (Adam, batch 100,
one posterior sample per example, the single-sample ELBO as the objective) from the
same initialisation seed of the shared parts; the test set is then scored by the ELBO
(mean over the samples) and the importance-weighted bound ``log p(x)`` with
``--iw_samples`` samples (the papers: 1,000-5,000), both in nats per digit.

Model: :func:`jaxflows.models.vae.vae`: MLP encoder and decoder (two hidden layers of
300 ELU units), 32 latent dimensions, the IAF posteriors with 2 layers of one hidden
MADE layer of 64 units and a 64-unit context from the encoder.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


def binarised_mnist_8k(seed: int = 0):
    """``(train [7200, 784], test [800, 784])`` float32 in {0, 1} (fixed binarisation)."""
    from jaxflows import data as jd
    train = jd.get_source("mnist_8k", "train").get_batch(np.arange(7200))["image"]
    test = jd.get_source("mnist_8k", "test").get_batch(np.arange(800))["image"]
    rng = np.random.default_rng(seed)

    def binarise(images):
        p = images.reshape(images.shape[0], -1).astype(np.float64) / 255.0
        return (rng.random(p.shape) < p).astype(np.float32)
    return binarise(train), binarise(test)


def train_vae(posterior: str, train, test, *, steps: int, seed: int, batch_size: int = 100,
              learning_rate: float = 1e-3, iw_samples: int = 1000, latent_dim: int = 32,
              hidden=(300, 300), log=print) -> dict:
    """Trains one VAE and returns its test ELBO and importance-weighted bound (nats)."""
    import jax
    import jax.numpy as jnp
    import optax

    from jaxflows.models.vae import bounds, vae

    model = vae(train.shape[1], posterior=posterior, latent_dim=latent_dim, hidden=hidden)
    key = jax.random.PRNGKey(seed)
    variables = model.init({"params": key, "sample": key}, jnp.asarray(train[:2]))
    params = variables["params"]
    buffers = {k: v for k, v in variables.items() if k != "params"}   # MADE masks
    tx = optax.adam(learning_rate)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, x, k):
        def loss_fn(p):
            return -jnp.mean(model.apply({"params": p, **buffers}, x, rngs={"sample": k}))
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    order = np.random.default_rng(seed)
    perm = order.permutation(len(train))
    pos = 0
    start = time.time()
    losses = []
    for s in range(steps):
        if pos + batch_size > len(train):
            perm, pos = order.permutation(len(train)), 0
        x = jnp.asarray(train[perm[pos:pos + batch_size]])
        pos += batch_size
        params, opt_state, loss = step(params, opt_state, x, jax.random.fold_in(key, s))
        losses.append(loss)
        if (s + 1) % max(steps // 5, 1) == 0:
            log(f"  {posterior} seed {seed}: step {s + 1}, train -ELBO "
                f"{float(np.mean(jax.device_get(losses[-100:]))):.2f}")
    train_time = time.time() - start

    @jax.jit
    def score(x, k):
        return bounds(model, {"params": params, **buffers}, x, k, iw_samples,
                      chunk=min(100, iw_samples))

    elbo, iw = [], []
    for i in range(0, len(test), 100):
        e, w = score(jnp.asarray(test[i:i + 100]), jax.random.fold_in(key, 10 ** 6 + i))
        elbo.append(np.asarray(e))
        iw.append(np.asarray(w))
    return {"posterior": posterior, "seed": seed, "steps": steps,
            "test_elbo": float(np.mean(np.concatenate(elbo))),
            "test_log_px_iw": float(np.mean(np.concatenate(iw))),
            "iw_samples": iw_samples, "train_seconds": round(train_time, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posteriors", default="gaussian,iaf_affine,iaf_dsf")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--iw_samples", type=int, default=1000)
    parser.add_argument("--out", default="", help="markdown table of the results")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.iw_samples < 1:
        parser.error("--steps and --iw_samples must be >= 1")
    posteriors = [p for p in args.posteriors.split(",") if p]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    train, test = binarised_mnist_8k()
    rows = []
    for posterior in posteriors:
        for seed in seeds:
            row = train_vae(posterior, train, test, steps=args.steps, seed=seed,
                            iw_samples=args.iw_samples)
            print(json.dumps(row), flush=True)
            rows.append(row)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(f"VAE on binarised mnist_8k (7,200 train / 800 test digits), "
                    f"{args.steps} steps of batch 100, test figures in nats per digit "
                    f"(log p(x): importance-weighted, {args.iw_samples} samples).\n\n"
                    "| posterior | seed | test ELBO | test log p(x) | train s |\n"
                    "|---|---|---|---|---|\n")
            for r in rows:
                f.write(f"| {r['posterior']} | {r['seed']} | {r['test_elbo']:.2f} | "
                        f"{r['test_log_px_iw']:.2f} | {r['train_seconds']} |\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
