r"""Glow on CIFAR-10 with the paper's architecture (Kingma & Dhariwal, 2018).

    python experiments/train.py --config=experiments/configs/glow_cifar10.py \
        --workdir=runs/glow_cifar10

Kingma & Dhariwal, *Glow: Generative Flow with Invertible 1x1 Convolutions*, NeurIPS
2018. Architecture and optimisation as in the paper (Sec. 5 and the authors' ablation
command ``--n_level 3 --depth 32 --flow_coupling 1 --learntop --lr 0.001``): L = 3
levels, K = 32 steps per level, 512 hidden channels in the coupling networks, affine
coupling with ``sigmoid(h + 2)`` scales (``--config.model.coupling=additive`` for the
additive variant), LU 1x1 convolutions, learned split priors, ``x / 256 - 0.5``
preprocessing, Adamax with learning rate 1e-3 and a linear warm-up over 10 epochs
(10 x 50,000 / 64 steps), batch 64, Polyak (EMA) averaging of the parameters.
``remat`` recomputes each step in the backward pass (Glow's gradient checkpointing).
2,500 training images are held out for best-checkpoint selection. The paper reports
3.35 bits/dim on test. The model is ``jaxflows.models.glow``'s defaults (which are the
paper's) with ``remat``.

Needs TFDS ``cifar10`` prepared (``tfds build cifar10 --file_format=array_record``) or
``--config.dataset.download=True`` with network. The ``small`` variant (same code,
L = 3, K = 2, 32 hidden channels, 200 steps) runs on a laptop CPU in minutes.
See glow_digits.py for the config schema.
"""
import ml_collections

from experiments.configs import common
from jaxflows.train import default_config

VARIANTS = ("", "small")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    common.check_variant("glow_cifar10", arg, VARIANTS)
    c = default_config()
    c.dataset.name = "cifar10"
    c.dataset.train_split = "train[:95%]"
    c.dataset.val_split = "train[95%:]"
    c.dataset.test_split = "test"

    c.model.name = "glow"         # the factory's defaults: L=3, K=32, 512 channels, ...
    c.model.remat = True

    c.batch_size = 64
    c.eval_batch_size = 500
    c.init_batch_size = 512
    c.num_train_steps = 1_000_000
    c.optim.name = "adamax"
    c.optim.learning_rate = 1e-3
    c.optim.warmup_steps = 7800
    c.ema_decay = 0.999
    c.log_every = 100
    c.eval_every = 10_000
    c.checkpoint_every = 5000

    if arg == "small":
        c.model.steps_per_level = 2
        c.model.hidden_channels = 32
        del c.model.remat
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
