r"""Class-conditional TarFlow on MNIST (28x28x1, 256 levels); small variant on ``mnist_8k``.

    python experiments/train.py --config=experiments/configs/tarflow_mnist.py \
        --workdir=runs/tarflow_mnist
    python experiments/train.py --config=experiments/configs/tarflow_mnist.py:small \
        --workdir=runs/tarflow_mnist_small

Zhai et al., *Normalizing Flows are Capable Generative Models* (TarFlow), 2024, with
TarFlow's own local MNIST setting: patch 4 (7 x 7 = 49 tokens of 16 features), 128
channels, 4 blocks of 4 transformer layers (``P-Ch-T-K = 4-128-4-4``), heads of 64
features (2 heads), class-conditional (``config.dataset.context = "label"``, so
bits/dim are conditional, ``-log2 p(x | y) / D``). Data scaling ``[-1, 1]`` with
log-det ``-D log 128``, ``D = 784`` (``jaxflows.models.tarflow``).

Our choices (the paper does not state its MNIST training): Gaussian noise augmentation
``noise_std = 0.05`` (TarFlow's ImageNet-64 value, in ``[-1, 1]`` units; sample with
``jaxflows.models.transformer_flows.denoise``), 10% label dropout for classifier-free
guidance, AdamW (betas 0.9 / 0.95 as TarFlow, weight decay 1e-4), learning rate 5e-4 with
warm-up and cosine decay, gradient clipping at 1, batch 128. Evaluation uses the EMA
parameters (0.999). The noise makes the training objective the density of noisy data;
reported bits/dim are of the uniformly dequantised test digits without that noise.

The small variant (CPU, offline) trains the same architecture on ``mnist_8k`` (8,000 real
digits shipped in ``jaxflows.data``; 6,480 / 720 / 800 split) for 1,500 steps of batch 64.
"""
import ml_collections

from experiments.configs import common
from jaxflows.train import default_config, set_fields

VARIANTS = ("", "small")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    common.check_variant("tarflow_mnist", arg, VARIANTS)
    c = common.held_out_splits(default_config(), "mnist", "55000")
    c.dataset.context = "label"
    set_fields(c, model=dict(name="tarflow", patch_size=4, channels=128, blocks=4,
                             layers_per_block=4, num_classes=10, noise_std=0.05,
                             label_drop=0.1))
    set_fields(
        c, batch_size=128, eval_batch_size=500, init_batch_size=128, num_train_steps=100_000,
        optim=dict(name="adamw", learning_rate=5e-4, b2=0.95, weight_decay=1e-4,
                   warmup_steps=1000, schedule="cosine", final_lr_fraction=0.01,
                   grad_clip_norm=1.0),
        ema_decay=0.999, log_every=100, eval_every=5000, checkpoint_every=5000,
        sample_temperatures=(0.7, 1.0), num_samples=40)
    if arg == "small":
        common.mnist_8k_splits(c)
        set_fields(c, batch_size=64, eval_batch_size=400, init_batch_size=64,
                   num_train_steps=1500, optim=dict(warmup_steps=100), ema_decay=0.99,
                   log_every=50, eval_every=250, checkpoint_every=250)
    return c
