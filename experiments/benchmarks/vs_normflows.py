r"""jaxflows against normflows (PyTorch): one training step of the same model, same machine.

For each configuration the same architecture, batch, data and optimiser are built in
jaxflows and in normflows (Stimper et al. 2023, torch CPU), one training step is timed
after warm-up (median and minimum over ``--repeats`` steps), and the ratio
``normflows time / jaxflows time`` is reported (> 1: jaxflows is faster). JAX's compile
time (``jit(...).lower(...).compile()`` of the train step) is reported separately and
is not part of the step time.

Configurations (MNIST, 28x28x1, batch 64, Adam lr 1e-3, negative log-likelihood):

* ``glow_k4``: Glow, L=2 levels, K=4 steps per level, hidden 128;
* ``glow_k16``: Glow, L=2, K=16, hidden 256;
* ``resflow``: a residual flow after one squeeze (14x14x4): 8 residual blocks
  ``x + g(x)``, ``g`` = LipSwish -> 3x3 conv(128) -> LipSwish -> 1x1 conv(128) -> LipSwish
  -> 3x3 conv(4), every convolution spectrally normalised to operator norm <= 0.97;
  log-det by the unbiased Russian-roulette estimator (geometric p=0.5, 2 exact terms,
  1 Gaussian probe) with the Neumann-series gradient (Chen et al. 2019, Eq. 7 and
  Thm 2); 5 power iterations per step update the spectral norms (jaxflows: inside the
  step; normflows: ``normflows.utils.update_lipschitz(model, 5)`` after each step,
  also timed without it);
* ``resflow_inverse``: the fixed-point inverse (no log-det) of that residual flow, at
  initialisation with non-zero last layers, on a batch of 64 latents ``f(x)``: time,
  iterations, ``max |f^{-1}(f(x)) - x|`` in pixel units. The stopping rules differ:
  normflows stops when ``(x_k - x_{k-1})^2 < 1e-5 (1 + |y|)`` elementwise, jaxflows
  on its error estimate reaching 4 float32 eps (``jaxflows.ops.fixed_point_inverse``).

The Glow step of each library, from data to latent (Kingma & Dhariwal 2018, Sec. 3):
ActNorm -> LU-parameterised invertible 1x1 convolution -> affine coupling with Glow's
``sigmoid(h + 2)`` scale and conditioner ``3x3 conv -> ActNorm -> ReLU -> 1x1 conv ->
ActNorm -> ReLU -> zero-initialised 3x3 conv`` (normflows: ``GlowBlock(...,
net_actnorm=True)``); factored-out halves and the final latent get a fixed ``N(0, I)``
prior (jaxflows ``glow(..., learn_split_prior=False)``, normflows ``DiagGaussian(...,
trainable=False)``). Parameter counts are printed; jaxflows has ``c`` more per coupling
(the ``logs`` output scale of Glow's ``conv2d_zeros``, which normflows omits).

Runtime settings: ``jaxflows.perf.configure_cpu()`` (glibc allocator that keeps freed
scratch memory mapped, ``--xla_cpu_prefer_vector_width=512`` on AVX-512) is applied at the
start of the process, before either library allocates, so **both** libraries run with it
(``--no_cpu_tuning`` runs both without). ``--unroll`` sets jaxflows' ``Repeat(unroll=)``
per config (default: Glow levels rolled, the 8 residual blocks unrolled); the table
prints what was used.

Both libraries see the same batches: the first 64 x ``steps`` digits of ``mnist_8k``, the
8,000 real MNIST digits shipped in ``jaxflows.data`` (``--data``: ``mnist_8k``, the path of an
``.npz`` file with an ``image`` array, or ``random`` for random uint8 images), dequantised
with uniform noise and scaled as Glow does (``x / 256 - 0.5``; jaxflows does this inside its
flow, normflows gets the scaled batch).

Usage (one command from a fresh environment, after ``bash experiments/benchmarks/setup_env.sh``)::

    .venv-bench/bin/python experiments/benchmarks/vs_normflows.py
    .venv-bench/bin/python experiments/benchmarks/vs_normflows.py --configs=glow_k4 --repeats=5
    .venv-bench/bin/python experiments/benchmarks/vs_normflows.py \
        --table_from runs/benchmarks/vs_normflows.json

Writes ``runs/benchmarks/vs_normflows.json`` (``--out``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List

import numpy as np

CONFIGS = ("glow_k4", "glow_k16", "resflow", "resflow_inverse")
GLOW = {"glow_k4": dict(levels=2, steps=4, hidden=128),
        "glow_k16": dict(levels=2, steps=16, hidden=256)}
RESFLOW = dict(blocks=8, hidden=128, coeff=0.97, power_iterations=5, p=0.5, exact_terms=2)
BATCH = 64
LR = 1e-3
DATA_HELP = ("mnist_8k (the real MNIST digits packaged in jaxflows.data), random (random "
             "uint8 images) or the path of an .npz file with an 'image' array")


# ----------------------------------------------------------------------------- data
def load_images(data: str, n: int, seed: int = 0) -> np.ndarray:
    """``n`` uint8 images [n, 28, 28, 1], repeated from the start if ``n`` exceeds the data.

    ``data`` is ``"mnist_8k"`` (the 8,000 real MNIST digits packaged in ``jaxflows.data``, in
    file order), ``"random"`` (uniform random uint8 images), or the path of an ``.npz`` file
    with an ``image`` array.
    """
    if data == "random":
        rng = np.random.default_rng(seed)
        return rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)
    if data == "mnist_8k":
        from jaxflows.data import mnist_8k
        images = mnist_8k.load()[0]
    else:
        with np.load(data) as f:
            images = f["image"]
    reps = -(-n // len(images))
    return np.concatenate([images] * reps)[:n]


def dequantised_batches(images: np.ndarray, steps: int, seed: int = 0) -> List[np.ndarray]:
    """Float32 batches ``k + u`` (u ~ U[0, 1)), the same for both libraries."""
    rng = np.random.default_rng(seed)
    out = []
    for s in range(steps):
        k = images[(s * BATCH) % len(images):][:BATCH]
        out.append((k.astype(np.float32) + rng.random(k.shape, dtype=np.float32)))
    return out


def timed(fn: Callable[[int], None], warmup: int, repeats: int) -> Dict[str, float]:
    for i in range(warmup):
        fn(i)
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        fn(warmup + i)
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "times_s": times}


# ----------------------------------------------------------------------------- jaxflows
def jax_glow_step(cfg, batches, warmup, repeats, conv_impl, unroll=1):
    from jaxflows.models import glow
    from jaxflows.nn import conv_impl as conv_override

    flow = glow((28, 28, 1), levels=cfg["levels"], steps_per_level=cfg["steps"],
                hidden_channels=cfg["hidden"], learn_split_prior=False, unroll=unroll)
    with conv_override(conv_impl):  # the step is traced and compiled inside the block
        return _jax_train(flow, batches, warmup, repeats, rngs=("dropout",))


def _resflow_flow(unroll=1):
    from jaxflows.bijectors import Chain, Repeat
    from jaxflows.bijectors.preprocessing import ScaleToUnit, Shift
    from jaxflows.bijectors.reshape import Squeeze
    from jaxflows.bijectors.residual import ResidualBlock
    from jaxflows.distributions import Flow

    def block():
        return ResidualBlock(hidden_channels=RESFLOW["hidden"], kernels=(3, 1, 3),
                             activation="lipswish", preact=True,
                             estimator=dict(kind="roulette",
                                            n_exact_terms=RESFLOW["exact_terms"],
                                            distribution="geometric", p=RESFLOW["p"],
                                            neumann_grad=True, n_samples=1),
                             spectral_norm=dict(coeff=RESFLOW["coeff"],
                                                n_iterations=RESFLOW["power_iterations"]))

    body = Repeat(make_step=block, num_steps=RESFLOW["blocks"], unroll=unroll)
    return Flow(bijector=Chain([ScaleToUnit(256), Shift(-0.5), Squeeze(), body]),
                event_shape=(28, 28, 1), latent_shape=(14, 14, 4))


def jax_resflow_step(batches, warmup, repeats, unroll=1):
    return _jax_train(_resflow_flow(unroll), batches, warmup, repeats, rngs=("logdet",))


def _jax_train(flow, batches, warmup, repeats, rngs):
    """The library's own train step (jaxflows.train.step.make_steps: jitted, donated state)
    with plain Adam; returns timings, compile time and parameter count.
    """
    import jax
    import jax.numpy as jnp
    import optax

    from jaxflows.train.mesh import make_mesh
    from jaxflows.train.step import make_steps

    mesh = make_mesh(jax.devices()[:1])
    tx = optax.adam(LR)
    steps = make_steps(flow, tx, mesh, num_dims=28 * 28, ema_decay=0.0, use_ema=False,
                       num_samples=1)
    # make_steps dequantises uint8 images itself; feed the integer part of our batches
    # (the step adds its own U[0, 1) noise, same distribution as normflows gets).
    images = [jnp.asarray(np.floor(b).astype(np.uint8)) for b in batches]
    state = steps.init(images[0], 0)
    jax.block_until_ready(state)
    n_params = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(state.params))
    t0 = time.perf_counter()
    compiled = steps.train.lower(state, images[0]).compile()
    compile_s = time.perf_counter() - t0
    box = {"state": state}

    def one(i):
        box["state"], metrics = compiled(box["state"], images[i % len(images)])
        jax.block_until_ready(metrics["loss"])
        box["loss"] = float(metrics["loss"])

    out = timed(one, warmup, repeats)
    out.update(compile_s=compile_s, params=n_params, final_loss_bpd=box["loss"])
    return out


def jax_resflow_inverse(batches, repeats):
    """Trains nothing: inverts ``f(x)`` for the initial (non-zero) residual flow."""
    import jax
    import jax.numpy as jnp

    from jaxflows.bijectors.residual import fixed_point_report

    flow = _resflow_flow()
    x = jnp.asarray(batches[0])
    variables = flow.init({"params": jax.random.PRNGKey(0), "logdet": jax.random.PRNGKey(1)}, x)
    variables = {k: v for k, v in variables.items() if k != "intermediates"}
    fwd = jax.jit(lambda v, x: flow.apply(v, x, method="forward_and_log_det")[0])
    # Only the inverse: the log-det output of inverse_and_log_det is dropped by
    # Flow.inverse, and XLA removes its computation from the jitted function.
    inv = jax.jit(lambda v, z: flow.apply(v, z, method="inverse", mutable=["intermediates"]))
    z = fwd(variables, x)
    t0 = time.perf_counter()
    inv_c = inv.lower(variables, z).compile()
    compile_s = time.perf_counter() - t0
    box = {}

    def one(i):
        xr, diag = inv_c(variables, z)
        jax.block_until_ready(xr)
        box["xr"], box["diag"] = xr, diag

    out = timed(one, 1, repeats)
    report = fixed_point_report(box["diag"]["intermediates"])
    scale = 256.0  # report the error in pixel units (data range [0, 256))
    out.update(compile_s=compile_s, iterations=report["max_iterations"],
               not_converged=report["num_not_converged"],
               max_abs_error=float(jnp.max(jnp.abs(box["xr"] - x))),
               rel_error=float(jnp.max(jnp.abs(box["xr"] - x)) / scale))
    return out


# ----------------------------------------------------------------------------- normflows
def torch_glow(cfg):
    import normflows as nf

    levels, k, hidden = cfg["levels"], cfg["steps"], cfg["hidden"]
    c, h, w = 1, 28, 28
    q0, merges, flows = [], [], []
    for i in range(levels):
        level = [nf.flows.GlowBlock(c * 2 ** (levels + 1 - i), hidden, split_mode="channel",
                                    scale=True, net_actnorm=True) for _ in range(k)]
        level += [nf.flows.Squeeze()]
        flows.append(level)
        if i > 0:
            merges.append(nf.flows.Merge())
            latent = (c * 2 ** (levels - i), h // 2 ** (levels - i), w // 2 ** (levels - i))
        else:
            latent = (c * 2 ** (levels + 1), h // 2 ** levels, w // 2 ** levels)
        q0.append(nf.distributions.DiagGaussian(latent, trainable=False))
    return nf.MultiscaleFlow(q0, flows, merges, class_cond=False)


def torch_resflow(init_zeros=True):
    import normflows as nf

    flows = []
    for _ in range(RESFLOW["blocks"]):
        net = nf.nets.LipschitzCNN([4, RESFLOW["hidden"], RESFLOW["hidden"], 4], [3, 1, 3],
                                   lipschitz_const=RESFLOW["coeff"],
                                   max_lipschitz_iter=RESFLOW["power_iterations"],
                                   init_zeros=init_zeros)
        flows.append(nf.flows.Residual(net, reduce_memory=True, geom_p=RESFLOW["p"],
                                       n_exact_terms=RESFLOW["exact_terms"], n_samples=1,
                                       n_dist="geometric"))
    flows.append(nf.flows.Squeeze())
    q0 = nf.distributions.DiagGaussian((4, 14, 14), trainable=False)
    return nf.NormalizingFlow(q0, flows)


def _to_torch(batches):
    import torch
    # NHWC [0, 256) -> NCHW in [-0.5, 0.5), as jaxflows' Glow preprocessing.
    return [torch.from_numpy(np.ascontiguousarray((b / 256.0 - 0.5).transpose(0, 3, 1, 2)))
            for b in batches]


def torch_train(model, batches, warmup, repeats, lipschitz_iterations=0, unconditional=True):
    import normflows as nf
    import torch

    xs = _to_torch(batches)
    const = 28 * 28 * math.log(256.0)  # the ScaleToUnit log-det: same objective (bits/dim)
    with torch.no_grad():  # ActNorm's data-dependent initialisation on the first batch
        model.log_prob(xs[0], None) if unconditional else model.log_prob(xs[0])
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    box = {}

    def one(i):
        x = xs[i % len(xs)]
        opt.zero_grad(set_to_none=True)
        lp = model.log_prob(x, None) if unconditional else model.log_prob(x)
        loss = torch.mean(-(lp - const)) / (28 * 28 * math.log(2.0))
        loss.backward()
        opt.step()
        if lipschitz_iterations:
            nf.utils.update_lipschitz(model, lipschitz_iterations)
        box["loss"] = float(loss)

    out = timed(one, warmup, repeats)
    out.update(params=n_params, final_loss_bpd=box["loss"])
    return out


def torch_resflow_inverse(batches, repeats):
    import torch

    model = torch_resflow(init_zeros=False)
    model.eval()
    x = _to_torch(batches)[0]
    calls = {"n": 0}
    nets = [f.iresblock.nnet for f in model.flows if hasattr(f, "iresblock")]
    for net in nets:
        net.register_forward_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))
    with torch.no_grad():
        z, _ = model.inverse_and_log_det(x)
        box = {}

        def one(i):
            # The sampling direction of each flow, without log-dets: the fixed-point
            # inverse iResBlock.inverse(z) of every residual block (reverse=True).
            calls["n"] = 0
            y = z
            for flow in model.flows:
                y = flow.iresblock.inverse(y) if hasattr(flow, "iresblock") else flow(y)[0]
            box["xr"] = y
            box["calls"] = calls["n"]

        out = timed(one, 1, repeats)
    err = float((box["xr"] - x).abs().max())
    # Calls to g per block: the first guess plus one per iteration (average over blocks).
    out.update(iterations_mean=box["calls"] / len(nets) - 1, max_abs_error=err * 256.0,
               rel_error=err)
    return out


# ----------------------------------------------------------------------------- driver
def machine_info() -> Dict[str, str]:
    info = {"python": platform.python_version(), "platform": platform.platform()}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in lscpu.splitlines():
            if line.startswith("Model name:"):
                info["cpu"] = line.split(":", 1)[1].strip()
    except OSError:
        pass
    info["cores"] = str(os.cpu_count())
    try:
        info["loadavg_start"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        pass
    info["date_utc"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return info


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--data", default="mnist_8k", help=DATA_HELP)
    ap.add_argument("--conv_impl", default="auto",
                    help="convolution implementation of the Glow conditioners "
                         "(jaxflows.nn.conv_impl)")
    ap.add_argument("--torch_threads", type=int, default=0, help="0: torch's default")
    ap.add_argument("--unroll", default="glow_k4=1,glow_k16=1,resflow=all",
                    help="jaxflows loop unrolling per config (Repeat(unroll=...)): an int, "
                         "or 'all' for a fully unrolled level")
    ap.add_argument("--no_cpu_tuning", action="store_true",
                    help="skip jaxflows.perf.configure_cpu() (glibc allocator + AVX-512 "
                         "vector width), which otherwise applies to the whole process, "
                         "i.e. to both libraries")
    ap.add_argument("--out", default="runs/benchmarks/vs_normflows.json")
    args = ap.parse_args(argv)
    configs = [c for c in args.configs.split(",") if c]
    for c in configs:
        if c not in CONFIGS:
            raise ValueError(f"--configs: unknown config {c!r}; known: {CONFIGS}")

    unroll = {}
    for item in filter(None, args.unroll.split(",")):
        name, _, val = item.partition("=")
        if name not in CONFIGS or not (val == "all" or val.isdigit()):
            raise ValueError(f"--unroll: expected CONFIG=INT|all items, got {item!r}.")
        unroll[name] = True if val == "all" else int(val)
    # Before jax/torch allocate anything: process-wide, so both libraries get it.
    from jaxflows.perf import configure_cpu
    tuning = {"disabled": True} if args.no_cpu_tuning else configure_cpu()
    import jax
    import normflows as nf
    import torch
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    torch.manual_seed(0)
    info = machine_info()
    info.update(jax=jax.__version__, backend=jax.default_backend(), torch=torch.__version__,
                torch_threads=str(torch.get_num_threads()), normflows=nf.__version__,
                cpu_tuning=json.dumps(tuning), unroll=json.dumps(unroll))
    n_steps = args.warmup + args.repeats
    batches = dequantised_batches(load_images(args.data, BATCH * n_steps), n_steps)
    results = {}
    for name in configs:
        print(f"[{time.strftime('%H:%M:%S')}] {name} ...", flush=True)
        if name in GLOW:
            j = jax_glow_step(GLOW[name], batches, args.warmup, args.repeats, args.conv_impl,
                              unroll.get(name, 1))
            t = torch_train(torch_glow(GLOW[name]), batches, args.warmup, args.repeats)
        elif name == "resflow":
            j = jax_resflow_step(batches, args.warmup, args.repeats, unroll.get(name, 1))
            t = torch_train(torch_resflow(), batches, args.warmup, args.repeats,
                            lipschitz_iterations=RESFLOW["power_iterations"],
                            unconditional=False)
            t_nolip = torch_train(torch_resflow(), batches, args.warmup, args.repeats,
                                  unconditional=False)
            t["without_lipschitz_update"] = {k: t_nolip[k] for k in ("median_s", "min_s")}
        else:
            j = jax_resflow_inverse(batches, args.repeats)
            t = torch_resflow_inverse(batches, args.repeats)
        j["unroll"] = unroll.get(name, 1) if name != "resflow_inverse" else None
        results[name] = {"jaxflows": j, "normflows": t,
                         "ratio_median": t["median_s"] / j["median_s"],
                         "ratio_min": t["min_s"] / j["min_s"]}
        print(f"    jaxflows {j['median_s']:.4f} s (min {j['min_s']:.4f}), normflows "
              f"{t['median_s']:.4f} s (min {t['min_s']:.4f}): "
              f"ratio {results[name]['ratio_median']:.2f}x",
              flush=True)
    try:
        info["loadavg_end"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        pass
    print_table(results, info)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"machine": info, "args": vars(args), "results": results}, f, indent=1)
    print(f"wrote {args.out}")
    return results


def print_table(results, info):
    print(f"\nmachine: {info.get('cpu')} ({info.get('cores')} cores), jax {info['jax']} "
          f"({info['backend']}), torch {info['torch']} ({info['torch_threads']} threads), "
          f"normflows {info['normflows']}, {info['date_utc']}, load avg {info.get('loadavg_start')}"
          f" -> {info.get('loadavg_end')}")
    if "cpu_tuning" in info:
        print(f"cpu tuning (both libraries, same process): {info['cpu_tuning']}; jaxflows "
              f"unroll: {info.get('unroll')}")
    head = (f"| {'config':<16} | {'params jaxflows/normflows':>25} | "
            f"{'jaxflows s (min)':>17} | {'compile s':>9} | "
            f"{'normflows s (min)':>18} | {'ratio':>6} | {'ratio of mins':>13} |")
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for name, r in results.items():
        j, t = r["jaxflows"], r["normflows"]
        params = (f"{j['params']:,} / {t['params']:,}" if "params" in j else "-")
        print(f"| {name:<16} | {params:>25} | {j['median_s']:>8.4f} ({j['min_s']:.4f}) | "
              f"{j['compile_s']:>9.1f} | {t['median_s']:>9.4f} ({t['min_s']:.4f}) | "
              f"{r['ratio_median']:>5.2f}x | {r['ratio_min']:>12.2f}x |")
    if "resflow" in results:
        t = results["resflow"]["normflows"]["without_lipschitz_update"]
        print(f"normflows resflow without its Lipschitz update: {t['median_s']:.4f} s "
              f"(min {t['min_s']:.4f})")
    if "resflow_inverse" in results:
        j, t = results["resflow_inverse"]["jaxflows"], results["resflow_inverse"]["normflows"]
        print(f"fixed-point inverse: jaxflows {j['iterations']} iterations (slowest block), "
              f"max error {j['max_abs_error']:.2e} pixel units; normflows "
              f"{t['iterations_mean']:.1f} iterations (mean over blocks), max error "
              f"{t['max_abs_error']:.2e}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--table_from":   # re-print a saved run
        with open(sys.argv[2]) as f:
            saved = json.load(f)
        print_table(saved["results"], saved["machine"])
    else:
        main()
