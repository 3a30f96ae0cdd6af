# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # jaxflows quickstart: train a Glow, look at it, use one bijector in plain JAX
#
# This notebook (its source of truth is `experiments/notebooks/quickstart.py`, kept in
# jupytext's "percent" format; `quickstart.ipynb` is generated from it with
# `jupytext --to ipynb experiments/notebooks/quickstart.py`) runs on Colab (TPU, GPU or
# CPU runtime) or locally:
#
# 1. installs jaxflows when it is not importable (Colab);
# 2. detects the accelerator and says so when it falls back to CPU;
# 3. trains a small Glow on `digits` (scikit-learn's bundled 8x8 digits, 17 grey levels:
#    real data, no download) with the library's trainer, `jaxflows.train.train_and_evaluate`;
# 4. shows the training curves and samples inline;
# 5. computes the density of test digits with the trained flow, and imports one bijector
#    (a residual block) into plain JAX code with `jaxflows.as_functions` to compute a
#    density by hand.
#
# `JAXFLOWS_NOTEBOOK_TINY=1` in the environment shrinks everything so that the whole
# notebook runs in seconds (the test suite executes it that way:
# `tests/test_notebook.py`). `JAXFLOWS_NOTEBOOK_WORKDIR` sets where the run writes.

# %%
import importlib.util
import os
import subprocess
import sys

TINY = os.environ.get("JAXFLOWS_NOTEBOOK_TINY", "0") not in ("", "0")

# %% [markdown]
# ## 1. Install (Colab)
#
# Skipped when `jaxflows` is already importable (a local checkout installed with
# `pip install -e .`). On Colab, set `JAXFLOWS_REPO_URL` to the git URL of this
# repository (or upload it to `./jaxflows`); the cell installs the JAX build of the
# runtime's accelerator and the pinned requirements, except TensorFlow (3 GB; only
# needed to *prepare* TFDS image datasets such as MNIST, not for `digits`) and the
# test/lint tools.

# %%
def _install_jaxflows(repo_url: str, target: str = "jaxflows") -> None:
    """Clone (unless ``target`` exists) and pip-install jaxflows for this runtime."""
    if not os.path.isdir(target):
        if not repo_url:
            raise RuntimeError(
                "jaxflows is not installed: set the environment variable JAXFLOWS_REPO_URL "
                "to the repository's git URL (e.g. os.environ['JAXFLOWS_REPO_URL'] = "
                "'https://...') or upload the repository to ./jaxflows, then rerun this cell.")
        subprocess.run(["git", "clone", "--depth=1", repo_url, target], check=True)
    pip = [sys.executable, "-m", "pip", "install", "-q"]
    on_tpu = os.path.exists("/dev/accel0") or "COLAB_TPU_ADDR" in os.environ
    on_gpu = subprocess.run(["sh", "-c", "command -v nvidia-smi"],
                            capture_output=True).returncode == 0
    if on_tpu:
        subprocess.run(pip + ["jax[tpu]==0.10.2"], check=True)
    elif on_gpu:
        subprocess.run(pip + ["jax[cuda12]==0.10.2"], check=True)
    skip = ("tensorflow==", "tf-keras==", "pandas==", "h5py==", "pytest", "ruff")
    with open(os.path.join(target, "requirements.txt")) as f:
        reqs = [line.strip() for line in f
                if line.strip() and not line.startswith("#") and not line.startswith(skip)]
    if on_tpu or on_gpu:   # keep the accelerator build installed above
        reqs = [r for r in reqs if not r.startswith(("jax==", "jaxlib=="))]
    subprocess.run(pip + reqs, check=True)
    subprocess.run(pip + ["--no-deps", "-e", target], check=True)
    sys.path.insert(0, os.path.abspath(target))


if importlib.util.find_spec("jaxflows") is None:
    _install_jaxflows(os.environ.get("JAXFLOWS_REPO_URL", ""))
else:
    print("jaxflows is importable: skipping the installation.")

# %% [markdown]
# ## 2. The accelerator
#
# JAX picks the best backend it finds (TPU, then GPU, then CPU). The trainer is
# data-parallel over every device it sees, so nothing below depends on which one it is.

# %%
import jax  # noqa: E402


def describe_accelerator() -> str:
    """One line naming the backend JAX uses and its devices (says when it is the CPU)."""
    backend = jax.default_backend()
    devices = jax.devices()
    kinds = sorted({d.device_kind for d in devices})
    if backend == "cpu":
        return (f"No GPU or TPU found: falling back to CPU ({len(devices)} device(s), "
                f"{', '.join(kinds)}). Training works, only slower; on Colab choose "
                "Runtime > Change runtime type > T4 GPU or TPU.")
    return f"Accelerator: {backend.upper()}, {len(devices)} x {', '.join(kinds)}."


print(describe_accelerator())

# %% [markdown]
# ## 3. Train a small Glow on `digits`
#
# The config is the repository's `experiments/configs/glow_digits.py:small` (2 levels of
# 2 steps, hidden width 32, 300 Adam steps, dropout 0.2, EMA of the parameters, the
# checkpoint best on a held-out validation split is evaluated on the test split).
# The same run from a terminal:
#
#     python experiments/train.py --config=experiments/configs/glow_digits.py:small \
#         --workdir=runs/quickstart
#
# Rerunning the cell with the same work directory resumes from its checkpoint (a
# finished run is only re-evaluated).

# %%
import json  # noqa: E402
import math  # noqa: E402
import tempfile  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from experiments.configs import glow_digits  # noqa: E402
from jaxflows import train as jt  # noqa: E402

config = glow_digits.get_config("small")
config.progress_bar = not TINY
if TINY:    # seconds, not minutes: a 1-level, 1-step Glow for 6 steps
    config.dataset.train_split = "train[:1200]"
    config.dataset.val_split = "train[1200:1300]"
    config.model.levels = 1
    config.model.steps_per_level = 1
    config.model.hidden_channels = 8
    config.batch_size = 16
    config.init_batch_size = 64
    config.eval_batch_size = 300
    config.num_train_steps = 6
    config.optim.warmup_steps = 2
    config.log_every = 1
    config.eval_every = 3
    config.checkpoint_every = 3
    config.sample_temperatures = (0.7,)
    config.num_samples = 16

workdir = os.environ.get("JAXFLOWS_NOTEBOOK_WORKDIR") or (
    tempfile.mkdtemp(prefix="quickstart_") if TINY else "runs/quickstart")
results = jt.train_and_evaluate(config, workdir)
uniform_bpd = math.log2(17)    # every one of the 17 levels equally likely
print(f"test bits/dim {results['test_bpd']:.3f} (uniform over 17 levels: {uniform_bpd:.3f}), "
      f"best step {results['best_step']} of {results['step']}; outputs in {workdir}")

# %% [markdown]
# ## 4. Curves and samples
#
# `metrics.jsonl` holds one JSON line per logging step (`train_bpd`) and evaluation
# (`val_bpd`); the trainer also drew them into `curves.png`.

# %%
with open(os.path.join(workdir, "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f if line.strip()]
fig, ax = plt.subplots(figsize=(5, 3.2))
for key, style in (("train_bpd", "-"), ("val_bpd", "o-")):
    points = [(r["step"], r[key]) for r in records if key in r]
    if points:
        ax.plot(*zip(*points), style, label=key)
ax.axhline(uniform_bpd, color="grey", ls=":", label="uniform")
ax.set_xlabel("step")
ax.set_ylabel("bits/dim")
ax.legend()
plt.show()

# %% [markdown]
# The trained state (best on validation) is restored from the work directory and
# sampled at several temperatures (Glow's reduced-temperature sampling).

# %%
run = jt.prepare_run(config, workdir)
state, meta, best_step = jt.restore_for_eval(workdir, jt.abstract_state(run))
variables = jt.evaluation_variables(run, state, run.settings.use_ema)
flow = run.flow
num_bins = run.info.num_bins
temperatures = (0.7, 1.0)


@jax.jit
def sample(variables, key, temperature):
    """16 images from the flow at ``temperature`` (one compilation for every T)."""
    return flow.apply(variables, 16, temperature=temperature, method=flow.sample,
                      rngs={"sample": key})


fig, axes = plt.subplots(1, len(temperatures), figsize=(3.2 * len(temperatures), 3.4))
for ax, t in zip(axes, temperatures):
    x = sample(variables, jax.random.PRNGKey(0), t)
    grid = jt.image_grid(jt.to_pixels(np.asarray(x), num_bins))
    ax.imshow(grid[..., 0], cmap="gray", vmin=0, vmax=255)
    ax.set_title(f"T = {t}")
    ax.axis("off")
plt.show()

# %% [markdown]
# ## 5. Densities
#
# The flow's `log_prob` is the density of dequantised pixels `x = k + u`,
# `u ~ U[0, 1)^D`, in nats; `jaxflows.bits_per_dim` turns it into bits/dim, an upper
# bound on the discrete model's (Theis et al. 2016).

# %%
import jaxflows  # noqa: E402

test = jt.get_split_source(run.settings.dataset, "test")
k = np.stack([np.asarray(test[i]["image"]) for i in range(8)])
x = k + jax.random.uniform(jax.random.PRNGKey(1), k.shape)
log_p = jax.jit(flow.apply)(variables, x)                            # [8], nats
bpd = jaxflows.bits_per_dim(log_p, run.num_dims)
print("bits/dim of 8 test digits:", np.round(np.asarray(bpd), 3))

# %% [markdown]
# ### One bijector in plain JAX code
#
# Any jaxflows bijector becomes two pure, jittable functions of arrays with
# `jaxflows.as_functions(module, variables)`: no Flax in the code that uses them. Here an
# invertible residual block `f(x) = x + g(x)` (Lipschitz constant of `g` below 0.9 by
# spectral normalisation) on 2-D points, with its exact log-determinant at evaluation,
# defines the density `p(x) = N(f(x); 0, I) |det df/dx|`. We check the log-determinant
# against `jax.jacfwd`, the density's mass on a grid, and the fixed-point inverse.

# %%
import jax.numpy as jnp  # noqa: E402

block = jaxflows.bijectors.ResidualBlock(
    hidden_channels=32, kernels=(1, 1), eval_estimator=dict(kind="exact"),
    spectral_norm=dict(coeff=0.9))
block_vars = jax.jit(block.init)(jax.random.PRNGKey(2), jnp.zeros((4, 2)))
f, f_inv = jaxflows.as_functions(block, block_vars, diagnostics=True)
f, f_inv = jax.jit(f), jax.jit(f_inv)     # plain functions: jit, vmap, grad apply


@jax.jit
def log_density(points):
    """``log p(x)`` of the 2-D points ``[n, 2]``: a standard normal pushed through f^-1."""
    y, log_det = f(points)
    return -0.5 * jnp.sum(y ** 2, axis=1) - jnp.log(2 * jnp.pi) + log_det


pts = jax.random.normal(jax.random.PRNGKey(3), (5, 2))
jac = jax.vmap(jax.jacfwd(lambda p: f(p[None])[0][0]))(pts)
print("log-det vs jacfwd, max error:",
      float(jnp.max(jnp.abs(f(pts)[1] - jnp.linalg.slogdet(jac)[1]))))

n_grid = 61 if TINY else 201
lin = jnp.linspace(-5.0, 5.0, n_grid)
gx, gy = jnp.meshgrid(lin, lin)
dens = jnp.exp(log_density(jnp.stack([gx.ravel(), gy.ravel()], axis=1))).reshape(gx.shape)
mass = float(jnp.sum(dens) * (lin[1] - lin[0]) ** 2)
print(f"probability mass on [-5, 5]^2: {mass:.4f}")

y = jax.random.normal(jax.random.PRNGKey(4), (4, 2))
x_back, _, info = f_inv(y)
print("inverse: max |f(f^-1(y)) - y| =", float(jnp.max(jnp.abs(f(x_back)[0] - y))),
      "| not converged:", int(jnp.sum(info["not_converged"])))

fig, ax = plt.subplots(figsize=(3.4, 3.4))
ax.imshow(dens, origin="lower", extent=(-5, 5, -5, 5), cmap="viridis")
ax.set_title("p(x) of one residual block")
plt.show()
