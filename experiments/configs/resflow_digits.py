r"""Residual Flow on ``digits`` (8x8, 17 levels): a CPU-sized model of the paper's design.

    python experiments/train.py --config=experiments/configs/resflow_digits.py:small \
        --workdir=runs/resflow_small
    python experiments/train.py --config=experiments/configs/resflow_digits.py \
        --workdir=runs/resflow_digits

Residual Flows (Chen et al., *Residual Flows for Invertible Generative Modeling*,
NeurIPS 2019) as built by ``jaxflows.models.resflow`` (LipSwish, kernels 3-1-3,
coefficient 0.98, ActNorm after every block, no factor-out, logit preprocessing, Russian
roulette with 2 exact terms + Poisson(2) and the Neumann gradient; evaluation by the
deterministic 20-term estimator with 8 probes: the factory's defaults) on ``digits``.

``small`` is :func:`experiments.configs.common.residual_small` (the ``:small`` variant
of every residual-flow config; same as ``resflow_mnist.py:small``): 2 levels of 2
blocks, hidden width 32, one fully connected end block of width 64, 1,200 steps. The
default variant is a somewhat larger model: 4 blocks per level, 64 channels, 2 fully
connected end blocks of width 128, 2,000 steps. Config schema: ``glow_digits.py``.
"""
import ml_collections

from experiments.configs import common
from jaxflows.train import default_config, set_fields

VARIANTS = ("", "small")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    common.check_variant("resflow_digits", arg, VARIANTS)
    c = common.residual_small(default_config(), "resflow")
    if arg == "small":
        return c
    return set_fields(c, model=dict(blocks_per_level=4, hidden_channels=64, fc_blocks=2,
                                    fc_hidden=128),
                      num_train_steps=2000, eval_every=200, checkpoint_every=500)
