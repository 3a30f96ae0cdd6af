r"""Attentive Contractive Flow on CIFAR-10 (Mukherjee et al., arXiv:2109.12135); small on digits.

    python experiments/train.py --config=experiments/configs/acf_cifar10.py --workdir=runs/acf_cifar10
    python experiments/train.py --config=experiments/configs/acf_cifar10.py:small \
        --workdir=runs/acf_cifar10_small

Residual Flow backbone (3 levels on 32x32x3, LipSwish branches of width 512,
coefficient 0.98, Russian-roulette log-det) with LipschitzNorm dot-product attention
(the variant ACF reports as most robust) in every residual branch, 4 heads (12, 24, 48
channels per level are all divisible by 4). Full config: TFDS ``cifar10``. See
glow_digits.py for the config schema; ``small`` is the digits variant of acf_mnist.py.
"""
import os
import sys

import ml_collections

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from acf_mnist import digits_small  # noqa: E402  (shared small variant)
from jaxflows.train import default_config  # noqa: E402


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = default_config()
    c.seed = 0
    c.dataset.name = "cifar10"
    c.dataset.train_split = "train[:45000]"
    c.dataset.val_split = "train[45000:]"
    c.dataset.test_split = "test"

    c.model.name = "acf"
    c.model.base = "resflow"
    c.model.attention = "lipnorm"
    c.model.heads = 4
    c.model.levels = 3
    c.model.blocks_per_level = 16
    c.model.hidden_channels = 512
    c.model.preprocessing = "logit"
    c.model.alpha = 0.05

    c.batch_size = 64
    c.eval_batch_size = 500
    c.init_batch_size = 512
    c.num_train_steps = 300_000
    c.optim.name = "adam"
    c.optim.learning_rate = 1e-3
    c.optim.warmup_steps = 1000
    c.ema_decay = 0.999
    c.log_every = 100
    c.eval_every = 5000
    c.checkpoint_every = 5000

    if arg == "small":
        digits_small(c)
    elif arg:
        raise ValueError(f"acf_cifar10: unknown config variant {arg!r}; use '' or 'small'.")
    return c
