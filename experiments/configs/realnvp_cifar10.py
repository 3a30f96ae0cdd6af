r"""Real NVP on CIFAR-10 (Dinh, Sohl-Dickstein & Bengio, 2017).

    python experiments/train.py --config=experiments/configs/realnvp_cifar10.py \
        --workdir=runs/realnvp_cifar10

Dinh, Sohl-Dickstein & Bengio, *Density estimation using Real NVP*, ICLR 2017.
Architecture of the paper (Sec. 4.1): logit preprocessing with alpha = 0.05,
coupling layers whose scale and translation come from ResNets with 8 residual blocks
and 64 feature maps, downscaling only once for CIFAR-10 (two scales: 3 checkerboard
couplings, squeeze, 3 channel-wise couplings, factor out half, then 4 checkerboard
couplings), ActNorm in place of batch normalisation; Adam with learning rate 1e-3,
L2 weight decay 5e-5 (here decoupled, AdamW), batch 64. The paper reports 3.49
bits/dim on test. 2,500 training images are held out for best-checkpoint selection.
The model is ``jaxflows.models.realnvp``'s defaults (the paper's) with two scales.

Needs TFDS ``cifar10`` prepared; the ``small`` variant (2 residual blocks of 16
feature maps, 200 steps) runs on a laptop CPU in minutes. See glow_digits.py for the
config schema.
"""
import ml_collections

from experiments.configs import common
from jaxflows.train import default_config, set_fields

VARIANTS = ("", "small")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    common.check_variant("realnvp_cifar10", arg, VARIANTS)
    c = common.held_out_splits(default_config(), "cifar10", "95%")
    set_fields(c, model=dict(name="realnvp",
                             levels=2))            # CIFAR-10: one downscaling
    set_fields(
        c, batch_size=64, eval_batch_size=500, init_batch_size=512, num_train_steps=500_000,
        optim=dict(name="adamw", learning_rate=1e-3, weight_decay=5e-5, warmup_steps=200),
        ema_decay=0.999, log_every=100, eval_every=10_000, checkpoint_every=5000)

    if arg == "small":
        set_fields(c, model=dict(hidden_channels=16, num_blocks=2))
        common.cifar10_small_schedule(c)
    return c
