r"""TarFlow on ImageNet 64x64 (unconditional likelihood), the paper's setting.

    python experiments/train.py --config=experiments/configs/tarflow_imagenet64.py \
        --workdir=runs/tarflow_imagenet64

Zhai et al., *Normalizing Flows are Capable Generative Models* (TarFlow), 2024: 2.99
bits/dim on ImageNet 64x64. Architecture ``P-Ch-T-K-sigma = 2-768-8-8-0.05`` (patch 2,
i.e. 1,024 tokens of 12 features; 768 channels, 12 heads of 64; 8 blocks of 8 layers;
Gaussian noise 0.05 in ``[-1, 1]`` units), the defaults of ``jaxflows.models.tarflow``
but the noise; the released ImageNet-64 models carry the same ``2_768_8_8_0.05`` tag.
Training as TarFlow's ImageNet-64 command: AdamW (betas 0.9 / 0.95), learning rate 1e-4
with cosine decay, batch 256, 200 epochs (1,000,900 steps of 1,281,167 images).
Data: TFDS ``downsampled_imagenet/64x64`` (prepare it once with ``tfds build``), its
``validation`` split reported; bits/dim of the 8-bit pixels, ``D = 12,288``.
Needs accelerators: use ``--config.batch_size`` per your memory, ``inverse_method``
``"jacobi"`` (``--config.model.inverse_method=jacobi``) for fast sampling.
"""
import ml_collections

from experiments.configs import common
from jaxflows.train import default_config, set_fields

VARIANTS = ("",)


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    common.check_variant("tarflow_imagenet64", arg, VARIANTS)
    c = default_config()
    set_fields(c, dataset=dict(name="downsampled_imagenet/64x64", train_split="train",
                               val_split="", test_split="validation"))
    set_fields(c, model=dict(name="tarflow", noise_std=0.05))
    set_fields(
        c, batch_size=256, eval_batch_size=256, init_batch_size=256,
        num_train_steps=1_000_900,
        optim=dict(name="adamw", learning_rate=1e-4, b2=0.95, weight_decay=1e-4,
                   warmup_steps=1000, schedule="cosine", final_lr_fraction=0.0,
                   grad_clip_norm=1.0),
        ema_decay=0.9999, log_every=100, eval_every=10_000, checkpoint_every=10_000,
        sample_temperatures=(1.0,), num_samples=64)
    return c
