r"""Jet on ImageNet 64x64, big_vision's published config.

    python experiments/train.py --config=experiments/configs/jet_imagenet64.py \
        --workdir=runs/jet_imagenet64

Kolesnikov, Susano Pinto, Tschannen, *Jet: A Modern Transformer-Based Normalizing Flow*,
2024; big_vision ``configs/proj/jet/imagenet64.py`` (3.72 bits/dim after 200 epochs with
32 couplings of depth 2; 3.66 with 64 couplings of depth 5: ``--config.model.couplings=64
--config.model.block_depth=5``). Model: the defaults of ``jaxflows.models.jet`` (patch 4,
32 couplings, ViT depth 2, width 512, 8 heads, four channel couplings then one spatial,
spatial kinds cycling checkerboard / vstripes / hstripes and their inverses, scale
``2 sigmoid``). Training: Adam (b2 0.95), learning rate 3e-4 with 10% warm-up and cosine
decay, weight decay 1e-5 (AdamW here; big_vision decays decoupled as well), gradient
clipping at 1, batch 1024, 200 epochs (250,200 steps). Data: TFDS
``downsampled_imagenet/64x64`` scaled to ``[-1, 1]`` with uniform dequantisation;
``validation`` reported, ``D = 12,288``.
"""
import ml_collections

from experiments.configs import common
from jaxflows.train import default_config, set_fields

VARIANTS = ("",)


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    common.check_variant("jet_imagenet64", arg, VARIANTS)
    c = default_config()
    set_fields(c, dataset=dict(name="downsampled_imagenet/64x64", train_split="train",
                               val_split="", test_split="validation"))
    set_fields(c, model=dict(name="jet"))
    steps = 250_200
    set_fields(
        c, batch_size=1024, eval_batch_size=1024, init_batch_size=256, num_train_steps=steps,
        optim=dict(name="adamw", learning_rate=3e-4, b2=0.95, weight_decay=1e-5,
                   warmup_steps=steps // 10, schedule="cosine", final_lr_fraction=0.0,
                   grad_clip_norm=1.0),
        ema_decay=0.0, log_every=50, eval_every=5000, checkpoint_every=5000,
        sample_temperatures=(1.0,), num_samples=64)
    return c
