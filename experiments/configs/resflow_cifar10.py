r"""Residual Flow (Chen et al. 2019) on CIFAR-10 (32x32x3, 256 levels).

    python experiments/train.py --config=experiments/configs/resflow_cifar10.py \
        --workdir=runs/resflow_cifar10
    python experiments/train.py --config=experiments/configs/resflow_cifar10.py:small \
        --workdir=runs/resflow_small

Chen, Behrmann, Duvenaud, Jacobsen, *Residual Flows for Invertible Generative Modeling*,
NeurIPS 2019 (paper: 3.28 bits/dim), with the architecture and optimisation of the
reference ``train_img.py --data cifar10 --actnorm True``: logit preprocessing with
alpha = 0.05, 3 scales of 16 residual blocks (LipSwish, kernels 3-1-3, 512 channels,
coefficient 0.98, ActNorm after each), no factor-out, 4 fully connected end blocks of
width 128; Russian roulette with 2 exact terms + Poisson(2) terms, one Gaussian probe
and the Neumann gradient; evaluation by the deterministic 20-term estimator with 8
probes. The model is exactly ``jaxflows.models.resflow``'s defaults, so ``config.model``
names it only. Adam(lr 1e-3, betas 0.9/0.99) with 1,000 warm-up steps, gradient
clipping at norm 1, batch 64, EMA 0.999 for evaluation. The ``small`` variant is the
same architecture shrunk to train on ``digits`` on a CPU in minutes
(:func:`experiments.configs.common.residual_small`). Config schema: ``glow_digits.py``.
"""
import ml_collections

from experiments.configs import common

VARIANTS = ("", "small")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    common.check_variant("resflow_cifar10", arg, VARIANTS)
    return common.residual_cifar10("resflow", arg)
