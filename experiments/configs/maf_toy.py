r"""MAF (affine) on a 2-D toy density: the grid of Gaussians of the NAF paper by default.

    python experiments/train.py --config=experiments/configs/maf_toy.py --workdir=runs/maf_toy
    python experiments/train.py --config=experiments/configs/maf_toy.py:two_moons ...

Data: ``jaxflows.data.tabular``'s 2-D toys (drawn once from ``jaxflows.data.toy2d`` with
fixed keys: 20,000 train / 5,000 validation / 5,000 test points, no network). Variants:
``""`` the grid of Gaussians (NAF, Huang et al. 2018, Fig. 6: a 5 x 5 grid, std 0.1, on
which an affine autoregressive flow visibly fails where DSF succeeds), ``"small"`` the
same for 600 steps, or any toy name (``two_moons``, ``8gaussians``, ``checkerboard``,
``pinwheel``, ``spirals``, ``grid_gaussians``).

Model: MAF (Papamakarios et al. 2017): 5 MADE layers of two hidden layers of 64 units,
affine transformer ``y = x exp(s) + t``, orders reversed between layers, no batch norm.
Training (ours; the papers do not state toy settings): Adam 3e-3 with 100 warm-up steps
and cosine decay to 10%, batch 256, 10,000 steps, EMA 0.99, the best validation
checkpoint evaluated. Figures are negative log-likelihoods in nats per dimension
(``test_nats_per_dim``) and ``test_log_likelihood`` in nats per point; the run ends with
``density.png``: the learned density beside the data and samples.

The config schema is documented in ``glow_digits.py``; vector datasets give the flows on
vectors (``jaxflows.models.maf``, ``iaf``, ``naf``, ``nsf``, ``realnvp_vector``) their
dimension ``D`` as the first argument.
"""
from __future__ import annotations

import ml_collections

from experiments.configs import common
from jaxflows.data.tabular import VECTOR_DATASETS
from jaxflows.train import default_config, set_fields

TOYS = ("grid_gaussians", "two_moons", "8gaussians", "checkerboard", "pinwheel", "spirals")
VARIANTS = ("", "small") + TOYS


def toy_config(name: str, arg: str, model: dict) -> ml_collections.ConfigDict:
    """The shared toy run of ``maf_toy``, ``naf_toy`` and ``nsf_toy`` for ``model``."""
    common.check_variant(name, arg, VARIANTS)
    assert set(TOYS) <= set(VECTOR_DATASETS)
    c = default_config()
    c.seed = 0
    set_fields(c, dataset=dict(
        name=arg if arg in TOYS else "grid_gaussians",
        train_split="train",         # 20,000 points
        val_split="validation",      # 5,000 points, best-checkpoint selection
        test_split="test"))          # 5,000 points
    c.model = ml_collections.ConfigDict(model)
    set_fields(
        c, batch_size=256, eval_batch_size=2500, init_batch_size=256, num_train_steps=10000,
        optim=dict(name="adam", learning_rate=3e-3, warmup_steps=100, schedule="cosine",
                   final_lr_fraction=0.1, grad_clip_norm=10.0),
        ema_decay=0.99, log_every=100, eval_every=1000, checkpoint_every=1000,
        keep_checkpoints=1, sample_temperatures=(1.0,), num_samples=5000)
    if arg == "small":
        set_fields(c, num_train_steps=600, eval_every=200, checkpoint_every=200)
    return c


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    return toy_config("maf_toy", arg, dict(name="maf", num_layers=5,
                                           hidden_features=(64, 64)))
