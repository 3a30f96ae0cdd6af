r"""Hybrid density + classifier models on ``digits`` (8x8, 17 levels): Residual Flows Table 4.

    python experiments/train.py --config=experiments/configs/hybrid_digits.py:resflow_invd \
        --workdir=runs/hybrid_resflow_invd

A flow with a classifier head on its latent (:mod:`jaxflows.models.hybrid`), trained on
``-(lam log p(x) + log p(y | x))`` per example (``config.hybrid``, see
:class:`jaxflows.train.settings.HybridSettings`); evaluation reports the test accuracy
besides bits/dim (of ``log p(x)`` alone). Variants ``<blocks>_<lam>``:

* blocks: ``resflow`` (residual blocks: :func:`experiments.configs.common.residual_small`
  with ``factor_out=True``, so the latent is multi-scale) or ``glow`` (affine coupling
  blocks: 2 levels of 2 steps, 32 channels);
* lam: ``0`` (a classifier with an invertible backbone), ``invd`` (``1/D``, D = 64) or
  ``1`` (the full log-likelihood). The default ``""`` is ``resflow_invd``.

The head reads every level's factored-out latent and the final latent (``features =
"pooled"``), each through Conv 3x3 (32) -> ReLU -> global average pooling, then one
linear layer to the 10 classes. Departure from the paper: the validation split is
disabled and the last state is evaluated (with ``lam = 0`` the bits/dim that selects
the best checkpoint is meaningless), training on all 1,500 training digits; 600 steps
of batch 64 to keep each run a few minutes on a CPU.
"""
import ml_collections

from experiments.configs import common
from jaxflows.train import default_config, set_fields

BLOCKS = ("resflow", "glow")
LAMBDAS = {"0": 0.0, "invd": "1/D", "1": 1.0}
VARIANTS = ("",) + tuple(f"{b}_{lam}" for b in BLOCKS for lam in LAMBDAS)


def hybrid_section(lam) -> ml_collections.ConfigDict:
    """``config.hybrid`` of these configs: pooled features, heads of width 32."""
    return ml_collections.ConfigDict(dict(lam=lam, features="pooled", hidden=32))


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    common.check_variant("hybrid_digits", arg, VARIANTS)
    blocks, lam = (arg or "resflow_invd").split("_")
    if blocks == "resflow":
        c = common.residual_small(default_config(), "resflow")
        set_fields(c, model=dict(factor_out=True))
    else:
        c = common.digits_splits(default_config())
        set_fields(c, model=dict(name="glow", levels=2, steps_per_level=2, hidden_channels=32,
                                 preprocessing="logit"))
        set_fields(c, batch_size=64, eval_batch_size=300, init_batch_size=256,
                   optim=dict(name="adam", learning_rate=2e-3, b2=0.99, warmup_steps=50,
                              schedule="cosine", final_lr_fraction=0.05, grad_clip_norm=5.0),
                   ema_decay=0.99, log_every=25, keep_checkpoints=1,
                   sample_temperatures=(0.7, 1.0), num_samples=36)
    set_fields(c, dataset=dict(train_split="train", val_split=""), num_train_steps=600,
               eval_every=200, checkpoint_every=200)
    c.hybrid = hybrid_section(LAMBDAS[lam])
    return c
