r"""Attentive Contractive Flow on MNIST (Mukherjee et al., arXiv:2109.12135); small: digits.

    python experiments/train.py --config=experiments/configs/acf_mnist.py --workdir=runs/acf_mnist
    python experiments/train.py --config=experiments/configs/acf_mnist.py:small \
        --workdir=runs/acf_mnist_small

Mukherjee, Patro, Namboodiri, *Attentive Contractive Flow with Lipschitz Constrained
Self-Attention*, arXiv:2109.12135. ACF adds Lipschitz-constrained self-attention (here
L2 multi-head attention, Kim et al. 2021; ``model.attention="lipnorm"`` for the
LipschitzNorm dot-product variant) to the residual branches of a contractive flow
(``model.base``: ``resflow``, ``iresnet`` or ``idensenet``), keeping every branch a
contraction (see jaxflows/models/acf.py).

Full config: **the Residual Flow MNIST config** (``resflow_mnist.py``: TFDS ``mnist``,
logit alpha 1e-6, 3 scales 28 -> 14 -> 7 of 16 LipSwish blocks with 512 channels, no
factor-out, 4 fully connected end blocks, Russian-roulette log-det; Adam 1e-3, betas
0.9/0.99, clipping at norm 1) with one L2 attention head at the start of every
convolutional branch. The blocks see 1, 4 and 16 channels at the three scales
(``jaxflows.models.resflow.level_channels``), so ``heads`` must divide 1: one head; at
the first scale it attends over 28 x 28 = 784 tokens (a 784 x 784 score matrix per
image and block: a GPU job). With ``model.attention="none"`` it is exactly
``resflow_mnist.py``. See glow_digits.py for the config schema.

``small``: :func:`experiments.configs.common.acf_small`, the offline ``digits`` dataset
(8x8, 17 levels) with the layout and optimisation the attention ablations
(experiments/ablations.py) use: 2 levels, each a squeeze then 2 residual blocks of hidden
width 32 (LipSwish, coefficient 0.98, roulette), half of the channels factored out with
a fixed N(0, I) prior after level 0 (``squeeze_first=True, factor_out=True,
fc_blocks=0``: the blocks see 4 and 8 channels, so 1 or 2 heads), logit alpha 0.05;
Adam 1e-3 with cosine decay, 300 steps.
"""
import ml_collections

from experiments.configs import common, resflow_mnist

VARIANTS = ("", "small")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    common.check_variant("acf_mnist", arg, VARIANTS)
    if arg == "small":
        return common.acf_small()
    return common.with_attention(resflow_mnist.get_config(), "l2", heads=1)
