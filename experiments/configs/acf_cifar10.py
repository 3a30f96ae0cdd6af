r"""Attentive Contractive Flow on CIFAR-10 (Mukherjee et al., arXiv:2109.12135); small on digits.

    python experiments/train.py --config=experiments/configs/acf_cifar10.py \
        --workdir=runs/acf_cifar10
    python experiments/train.py --config=experiments/configs/acf_cifar10.py:small \
        --workdir=runs/acf_cifar10_small

Mukherjee, Patro, Namboodiri, *Attentive Contractive Flow with Lipschitz Constrained
Self-Attention*, arXiv:2109.12135. Full config: **the Residual Flow CIFAR-10 config**
(``resflow_cifar10.py``: logit alpha 0.05, 3 scales of 16 LipSwish blocks with 512
channels, no factor-out, 4 fully connected end blocks, Russian-roulette log-det; Adam
1e-3, betas 0.9/0.99, clipping at norm 1, 300,000 steps) with LipschitzNorm dot-product
attention (Dasoulas et al. 2021) at the start of every convolutional residual branch.
The blocks see 3, 12 and 48 channels at the three scales (32x32, 16x16, 8x8: 1,024, 256
and 64 tokens), so ``heads`` must divide 3: 3 heads of one channel each, or 1. With
``model.attention="none"`` it is exactly ``resflow_cifar10.py``. Full config: TFDS
``cifar10``. See glow_digits.py for the config schema; ``small`` is the digits variant
of acf_mnist.py (:func:`experiments.configs.common.acf_small`).
"""
import ml_collections

from experiments.configs import common, resflow_cifar10

VARIANTS = ("", "small")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    common.check_variant("acf_cifar10", arg, VARIANTS)
    if arg == "small":
        return common.acf_small()
    return common.with_attention(resflow_cifar10.get_config(), "lipnorm", heads=3)
