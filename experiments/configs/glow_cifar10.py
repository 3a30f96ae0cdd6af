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
from jaxflows.train import default_config, set_fields

VARIANTS = ("", "small")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    common.check_variant("glow_cifar10", arg, VARIANTS)
    c = common.held_out_splits(default_config(), "cifar10", "95%")
    # the factory's defaults: L=3, K=32, 512 channels, ...
    set_fields(c, model=dict(name="glow", remat=True))
    set_fields(
        c, batch_size=64, eval_batch_size=500, init_batch_size=512,
        num_train_steps=1_000_000,
        optim=dict(name="adamax", learning_rate=1e-3, warmup_steps=7800),
        ema_decay=0.999, log_every=100, eval_every=10_000, checkpoint_every=5000)

    if arg == "small":
        set_fields(c, model=dict(steps_per_level=2, hidden_channels=32))
        del c.model.remat
        common.cifar10_small_schedule(c)
    return c
