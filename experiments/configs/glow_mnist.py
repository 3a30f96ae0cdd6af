r"""Glow on MNIST (28x28x1, 256 levels); small variant on the 8,000-digit MNIST sample.

    python experiments/train.py --config=experiments/configs/glow_mnist.py --workdir=runs/glow_mnist
    python experiments/train.py --config=experiments/configs/glow_mnist.py:small \
        --workdir=runs/glow_mnist_small

Kingma & Dhariwal, *Glow: Generative Flow with Invertible 1x1 Convolutions*, NeurIPS
2018. The full config reads TFDS ``mnist`` (prepare it once: ``tfds build mnist
--file_format=array_record``, or ``--config.dataset.download=True`` with network):
2 levels (28 = 7 x 2^2), K = 32 steps per level, 512 hidden channels, affine
coupling, ``x / 256 - 0.5`` preprocessing (``jaxflows.models.glow``'s defaults but the
number of levels), Adamax 1e-3 with warm-up, 55,000 images for training and 5,000 held
out for best-checkpoint selection.

The small variant needs no download: it trains on ``mnist_8k``, 8,000 real MNIST digits
shipped inside ``jaxflows.data`` (its ``train`` split is the first 7,200, ``test`` the
last 800): 90% of ``train`` (6,480 digits) is trained on and 10% (720) validates
(:func:`experiments.configs.common.mnist_8k_splits`); K = 4, 32 hidden channels, logit
preprocessing (alpha 0.05), dropout 0.1, Adam with cosine decay, 1,500 steps of batch
32. See glow_digits.py for the config schema.
"""
import ml_collections

from experiments.configs import common
from jaxflows.train import default_config

VARIANTS = ("", "small")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    common.check_variant("glow_mnist", arg, VARIANTS)
    c = default_config()
    c.dataset.name = "mnist"
    c.dataset.train_split = "train[:55000]"
    c.dataset.val_split = "train[55000:]"
    c.dataset.test_split = "test"

    c.model.name = "glow"
    c.model.levels = 2

    c.batch_size = 64
    c.eval_batch_size = 500
    c.init_batch_size = 512
    c.num_train_steps = 200_000
    c.optim.name = "adamax"
    c.optim.learning_rate = 1e-3
    c.optim.warmup_steps = 5000
    c.ema_decay = 0.999
    c.log_every = 100
    c.eval_every = 5000
    c.checkpoint_every = 5000

    if arg == "small":
        common.mnist_8k_splits(c)
        c.model.steps_per_level = 4
        c.model.hidden_channels = 32
        c.model.preprocessing = "logit"
        c.model.dropout = 0.1
        c.batch_size = 32
        c.eval_batch_size = 400
        c.init_batch_size = 256
        c.num_train_steps = 1500
        c.optim.name = "adam"
        c.optim.warmup_steps = 50
        c.optim.schedule = "cosine"
        c.optim.final_lr_fraction = 0.1
        c.ema_decay = 0.99
        c.log_every = 50
        c.eval_every = 250
        c.checkpoint_every = 250
    return c
