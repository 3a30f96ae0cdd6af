r"""Hybrid density + classifier models on real MNIST digits (``mnist_8k``, 28x28, 256 levels).

    python experiments/train.py --config=experiments/configs/hybrid_mnist.py:glow_1 \
        --workdir=runs/hybrid_mnist_glow_1

The models and variants of ``hybrid_digits.py`` (``<resflow|glow>_<0|invd|1>``, default
``resflow_invd``; ``invd`` is ``lam = 1/D`` with D = 784) on the 8,000 real MNIST digits
shipped with ``jaxflows.data`` (:func:`experiments.configs.common.mnist_8k_splits`,
trained on all 7,200 ``train`` digits, tested on the 800 ``test`` digits; no validation
split: the last state is evaluated). Residual blocks: 2 levels of 2 blocks, 32 channels,
factor-out; coupling blocks: Glow with 2 levels of 4 steps, 32 channels. 2,000 steps of
batch 32.

Variants ``acf_<attention>_<0|invd|1>`` (``attention``: ``none``, ``l2``, ``lipnorm``)
are the hybrids of the noise-robustness study (``experiments/robustness.py``, ACF Sec.
4.5): the ACF model of ``acf_mnist.py:small_mnist`` (2 levels of a squeeze and 2
Residual Flows blocks of width 32, factor-out; 4 attention heads between the
convolutions, ``gamma`` from 1; ``none`` is the same Residual Flow without attention)
with its schedule (batch 32, Adam 1e-3, one evaluation at the end with 2 probes per
digit), trained on all 7,200 ``train`` digits for 600 steps: an attention run costs about
1 s a step on a 2-core CPU.
"""
import ml_collections

from experiments.configs import common
from experiments.configs.hybrid_digits import BLOCKS, LAMBDAS, hybrid_section
from jaxflows.train import default_config, set_fields

ATTENTION = ("none", "l2", "lipnorm")
VARIANTS = (("",) + tuple(f"{b}_{lam}" for b in BLOCKS for lam in LAMBDAS)
            + tuple(f"acf_{a}_{lam}" for a in ATTENTION for lam in LAMBDAS))
ACF_STEPS = 600


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    common.check_variant("hybrid_mnist", arg, VARIANTS)
    if arg.startswith("acf_"):
        _, attention, lam = arg.split("_")
        c = common.acf_small_mnist()
        set_fields(c, model=dict(attention=attention),
                   dataset=dict(train_split="train", val_split=""),
                   num_train_steps=ACF_STEPS, eval_every=ACF_STEPS,
                   checkpoint_every=ACF_STEPS)
        c.hybrid = hybrid_section(LAMBDAS[lam])
        return c
    blocks, lam = (arg or "resflow_invd").split("_")
    if blocks == "resflow":
        c = common.residual_small(default_config(), "resflow")
        set_fields(c, model=dict(factor_out=True))
    else:
        c = default_config()
        set_fields(c, model=dict(name="glow", levels=2, steps_per_level=4, hidden_channels=32,
                                 preprocessing="logit"))
        set_fields(c, optim=dict(name="adam", learning_rate=1e-3, warmup_steps=50,
                                 schedule="cosine", final_lr_fraction=0.1),
                   ema_decay=0.99, log_every=50, keep_checkpoints=1,
                   sample_temperatures=(0.7, 1.0), num_samples=36)
    common.mnist_8k_splits(c)
    set_fields(c, dataset=dict(train_split="train", val_split=""), batch_size=32,
               eval_batch_size=400, init_batch_size=256, num_train_steps=2000,
               eval_every=500, checkpoint_every=500)
    c.hybrid = hybrid_section(LAMBDAS[lam])
    return c
