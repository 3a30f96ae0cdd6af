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
from jaxflows.train import default_config

VARIANTS = ("", "small")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    common.check_variant("realnvp_cifar10", arg, VARIANTS)
    c = default_config()
    c.dataset.name = "cifar10"
    c.dataset.train_split = "train[:95%]"
    c.dataset.val_split = "train[95%:]"
    c.dataset.test_split = "test"

    c.model.name = "realnvp"
    c.model.levels = 2            # CIFAR-10: one downscaling

    c.batch_size = 64
    c.eval_batch_size = 500
    c.init_batch_size = 512
    c.num_train_steps = 500_000
    c.optim.name = "adamw"
    c.optim.learning_rate = 1e-3
    c.optim.weight_decay = 5e-5
    c.optim.warmup_steps = 200
    c.ema_decay = 0.999
    c.log_every = 100
    c.eval_every = 10_000
    c.checkpoint_every = 5000

    if arg == "small":
        c.model.hidden_channels = 16
        c.model.num_blocks = 2
        c.batch_size = 32
        c.eval_batch_size = 250
        c.init_batch_size = 128
        c.num_train_steps = 200
        c.optim.warmup_steps = 50
        c.ema_decay = 0.99
        c.log_every = 20
        c.eval_every = 100
        c.checkpoint_every = 100
        c.num_samples = 16
    return c
