r"""Attentive Contractive Flow on MNIST (Mukherjee et al., arXiv:2109.12135); small variant on digits.

    python experiments/train.py --config=experiments/configs/acf_mnist.py --workdir=runs/acf_mnist
    python experiments/train.py --config=experiments/configs/acf_mnist.py:small \
        --workdir=runs/acf_mnist_small

ACF adds Lipschitz-constrained self-attention (here L2 multi-head attention, Kim et al.
2021; ``model.attention="lipnorm"`` for the LipschitzNorm dot-product variant) to the
residual branches of a contractive flow (``model.base``: ``resflow``, ``iresnet`` or
``idensenet``), keeping every branch a contraction (see jaxflows/models/acf.py).

Full config: **the Residual Flow MNIST config** (``resflow_mnist.py``: TFDS ``mnist``,
logit alpha 1e-6, 3 scales 28 -> 14 -> 7 of 16 LipSwish blocks with 512 channels, no
factor-out, 4 fully connected end blocks, Russian-roulette log-det; Adam 1e-3, betas
0.9/0.99, clipping at norm 1) with one L2 attention head at the start of every
convolutional branch. The blocks see 1, 4 and 16 channels at the three scales
(``jaxflows.models.resflow.level_channels``), so ``heads`` must divide 1: one head; at
the first scale it attends over 28 x 28 = 784 tokens (a 784 x 784 score matrix per
image and block: a GPU job). With ``model.attention="none"`` it is exactly
``resflow_mnist.py``. See glow_digits.py for the config schema.

``small``: the offline ``digits`` dataset (8x8, 17 levels) with the layout and
optimisation the attention ablations (experiments/ablations.py) use: 2 levels, each a
squeeze then 2 residual blocks of hidden width 32 (LipSwish, coefficient 0.98,
roulette), half of the channels factored out with a fixed N(0, I) prior after level 0
(``squeeze_first=True, factor_out=True, fc_blocks=0``: the blocks see 4 and 8 channels,
so 1 or 2 heads), logit alpha 0.05; Adam 1e-3 with cosine decay, 300 steps.
"""
import importlib.util
import os

import ml_collections

from jaxflows.train import default_config

_HERE = os.path.dirname(os.path.abspath(__file__))


def load_sibling(name: str):
    """Imports ``experiments/configs/<name>.py`` (configs are files, not a package)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(_HERE, name + ".py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def with_attention(c: ml_collections.ConfigDict, attention: str, heads: int):
    """Turns a residual-flow config (``model.name`` resflow/iresnet/idensenet) into ACF."""
    base = c.model.name
    c.model.name = "acf"
    c.model.base = base
    c.model.attention = attention
    c.model.heads = heads
    return c


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    if arg == "small":
        return small_config()
    if arg:
        raise ValueError(f"acf_mnist: unknown config variant {arg!r}; use '' or 'small'.")
    return with_attention(load_sibling("resflow_mnist").get_config(), "l2", heads=1)


def small_config() -> ml_collections.ConfigDict:
    """The CPU-minutes digits variant (shared by acf_cifar10.py:small)."""
    c = default_config()
    c.seed = 0
    c.dataset.name = "digits"
    c.dataset.train_split = "train[:90%]"   # 1,350 images
    c.dataset.val_split = "train[90%:]"     # 150 images, best-checkpoint selection
    c.dataset.test_split = "test"           # 297 images
    c.model.name = "acf"
    c.model.base = "resflow"
    c.model.attention = "l2"
    c.model.heads = 1
    c.model.levels = 2
    c.model.squeeze_first = True            # every level: squeeze -> blocks -> factor out
    c.model.factor_out = True
    c.model.fc_blocks = 0
    c.model.blocks_per_level = 2
    c.model.hidden_channels = 32
    c.model.preprocessing = "logit"
    c.model.alpha = 0.05
    c.batch_size = 64
    c.eval_batch_size = 300
    c.init_batch_size = 256
    c.num_train_steps = 300
    c.optim.name = "adam"
    c.optim.learning_rate = 1e-3
    c.optim.warmup_steps = 100
    c.optim.schedule = "cosine"
    c.optim.final_lr_fraction = 0.05
    c.ema_decay = 0.995
    c.log_every = 50
    c.eval_every = 100
    c.checkpoint_every = 100
    c.keep_checkpoints = 2
    c.num_samples = 16
    return c
