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
from jaxflows.train import default_config, set_fields

VARIANTS = ("", "small")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    common.check_variant("glow_mnist", arg, VARIANTS)
    c = common.held_out_splits(default_config(), "mnist", "55000")
    set_fields(c, model=dict(name="glow", levels=2))
    set_fields(
        c, batch_size=64, eval_batch_size=500, init_batch_size=512, num_train_steps=200_000,
        optim=dict(name="adamax", learning_rate=1e-3, warmup_steps=5000),
        ema_decay=0.999, log_every=100, eval_every=5000, checkpoint_every=5000)

    if arg == "small":
        common.mnist_8k_splits(c)
        set_fields(c, model=dict(steps_per_level=4, hidden_channels=32,
                                 preprocessing="logit", dropout=0.1))
        set_fields(
            c, batch_size=32, eval_batch_size=400, init_batch_size=256, num_train_steps=1500,
            optim=dict(name="adam", warmup_steps=50, schedule="cosine", final_lr_fraction=0.1),
            ema_decay=0.99, log_every=50, eval_every=250, checkpoint_every=250)
    return c
