r"""AttnFlow on MNIST (Sukthanker et al., CVPR 2022, Sec. 4.1); small variant on digits.

    python experiments/train.py --config=experiments/configs/attnflow_mnist.py \
        --workdir=runs/attnflow_mnist                    # iMap (default)
    python experiments/train.py --config=experiments/configs/attnflow_mnist.py:itrans \
        --workdir=runs/attnflow_mnist_itrans             # iTrans
    python experiments/train.py --config=experiments/configs/attnflow_mnist.py:small \
        --workdir=runs/attnflow_mnist_small              # digits, CPU minutes

Sukthanker, Huang, Kumar, Timofte, Van Gool, *Generative Flows with Invertible
Attentions*, CVPR 2022. The paper's MNIST model: a Glow backbone with L=3 levels and K=2
steps per level, invertible attention in every step, Adam at learning rate 8e-4, on
MNIST padded to 32x32; these are ``jaxflows.models.attnflow``'s defaults (iMap at pos-1,
one head), so ``config.model`` names the model only. Here the data pipeline pads the
28x28 digits with 2 zero pixels on each side (``dataset.pad = 2``; see glow_digits.py),
so the model sees 32x32x1 and its three squeezes give 16x16x4, 8x8x8 and 4x4x16 levels
(``levels = 3``). Bits/dim are therefore over the 32 x 32 = 1,024 padded dimensions,
whose 240 border pixels are zeros plus dequantisation noise (nearly free to model): they
are **not comparable** with figures over the 784 MNIST pixels. Samples are saved at
32x32.

Variants (``--config=...attnflow_mnist.py:<variant>``):

* ``""`` or ``imap``: iMap attention (map-based) at pos-1 in every step.
* ``itrans``: iTrans attention (2 summed heads over 2x2 patch tokens, as in
  attnflow_cifar10.py) at pos-1 in every step; every level (16, 8, 4) is even.
* ``small``: the offline ``digits`` dataset (8x8, 17 levels, no padding) with the same
  protocol as ``glow_digits.py:small`` (so the two are comparable): 2 levels, K=2, 32
  hidden channels, iTrans with 2 heads, logit preprocessing, dropout 0.2, 300 steps
  (:func:`experiments.configs.common.attnflow_digits_small`).

Other settings (hidden width 512, affine coupling, shift preprocessing: the factory's
defaults; batch 64, EMA, warm-up) follow this project's Glow configs. Full configs:
TFDS ``mnist`` (prepare it once: ``tfds build mnist --file_format=array_record``). See
glow_digits.py for the config schema.
"""
import ml_collections

from experiments.configs import common
from jaxflows.train import default_config

VARIANTS = ("", "imap", "itrans", "small")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    common.check_variant("attnflow_mnist", arg, VARIANTS)
    c = default_config()
    c.seed = 0
    c.dataset.name = "mnist"
    c.dataset.train_split = "train[:55000]"
    c.dataset.val_split = "train[55000:]"
    c.dataset.test_split = "test"
    c.dataset.pad = 2             # 28x28 -> 32x32: three squeezes (L=3), as in the paper

    c.model.name = "attnflow"     # the factory's defaults: L=3, K=2, iMap at pos-1

    c.batch_size = 64
    c.eval_batch_size = 500
    c.init_batch_size = 512
    c.num_train_steps = 100_000
    c.optim.name = "adam"
    c.optim.learning_rate = 8e-4
    c.optim.warmup_steps = 1000
    c.ema_decay = 0.999
    c.log_every = 100
    c.eval_every = 5000
    c.checkpoint_every = 5000

    if arg == "itrans":
        c.model.attention = "itrans"
        c.model.heads = 2         # summed heads over 2x2 patch tokens (the default patch)
    elif arg == "small":
        common.attnflow_digits_small(c)
    return c
