r"""i-DenseNet (Perugachi-Diaz et al. 2021) on CIFAR-10 (32x32x3, 256 levels).

    python experiments/train.py --config=experiments/configs/idensenet_cifar10.py \
        --workdir=runs/idensenet_cifar10
    python experiments/train.py --config=experiments/configs/idensenet_cifar10.py:small \
        --workdir=runs/idensenet_small

Perugachi-Diaz, Tomczak, Bhulai, *Invertible DenseNets with Concatenated LipSwish*,
NeurIPS 2021 (paper: 3.25 bits/dim), as the reference README command: ``train_img.py
--data cifar10 --nblocks 16-16-16 --densenet True --learnable_concat True --act
CLipSwish --densenet_depth 3 --densenet_growth 172``, on top of the Residual Flows
defaults (logit alpha 0.05, ActNorm, coefficient 0.98, no factor-out, 4 fully connected
end blocks, which map ``D -> 64`` then grow by 32, roulette 2 exact terms + Poisson(2)
with the Neumann gradient; Adam 1e-3 with betas 0.9/0.99, 1,000 warm-up steps, clipping
at 1, batch 64, EMA). The model is exactly ``jaxflows.models.idensenet``'s defaults, so
``config.model`` names it only. (The reference switches the learnable concatenation on
after 25 epochs; here it is learned from the start.) The ``small`` variant trains on
``digits`` on a CPU in minutes (:func:`experiments.configs.common.residual_small`).
Config schema: ``glow_digits.py``.
"""
import ml_collections

from experiments.configs import common

VARIANTS = ("", "small")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    common.check_variant("idensenet_cifar10", arg, VARIANTS)
    return common.residual_cifar10("idensenet", arg)
