r"""Jet on MNIST (28x28x1, 256 levels); small variant on ``mnist_8k``.

    python experiments/train.py --config=experiments/configs/jet_mnist.py \
        --workdir=runs/jet_mnist
    python experiments/train.py --config=experiments/configs/jet_mnist.py:small \
        --workdir=runs/jet_mnist_small

Kolesnikov et al., *Jet*, 2024, scaled down (the paper has no MNIST model; these are our
choices): patch 2 (a 14 x 14 grid of 196 tokens of 4 features, so every spatial split is
even; patch 4 would give an odd 7 x 7 grid), 16 couplings, ViT depth 1, width 128,
4 heads, Jet's ImageNet-64 kinds (four channel couplings then one spatial) and spatial
kinds, scale ``2 sigmoid``. Training as big_vision's (Adam b2 0.95, weight decay 1e-5,
cosine decay with 10% warm-up, clipping at 1) at learning rate 1e-3, batch 128.
Data scaling ``[-1, 1]``, log-det ``-D log 128``, ``D = 784``.

The small variant (CPU, offline): ``mnist_8k`` (6,480 / 720 / 800 real digits), 8
couplings of width 64, 1,500 steps of batch 64.
"""
import ml_collections

from experiments.configs import common
from jaxflows.train import default_config, set_fields

VARIANTS = ("", "small")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    common.check_variant("jet_mnist", arg, VARIANTS)
    c = common.held_out_splits(default_config(), "mnist", "55000")
    set_fields(c, model=dict(name="jet", patch_size=2, couplings=16, block_depth=1,
                             width=128, heads=4))
    steps = 50_000
    set_fields(
        c, batch_size=128, eval_batch_size=500, init_batch_size=128, num_train_steps=steps,
        optim=dict(name="adamw", learning_rate=1e-3, b2=0.95, weight_decay=1e-5,
                   warmup_steps=steps // 10, schedule="cosine", final_lr_fraction=0.0,
                   grad_clip_norm=1.0),
        ema_decay=0.999, log_every=100, eval_every=5000, checkpoint_every=5000,
        sample_temperatures=(0.7, 1.0), num_samples=40)
    if arg == "small":
        common.mnist_8k_splits(c)
        set_fields(c, model=dict(couplings=8, width=64))
        set_fields(c, batch_size=64, eval_batch_size=400, init_batch_size=64,
                   num_train_steps=1500, optim=dict(warmup_steps=150), ema_decay=0.99,
                   log_every=50, eval_every=250, checkpoint_every=250)
    return c
