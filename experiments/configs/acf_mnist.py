r"""Attentive Contractive Flow on MNIST (Mukherjee et al., arXiv:2109.12135); small: digits.

    python experiments/train.py --config=experiments/configs/acf_mnist.py --workdir=runs/acf_mnist
    python experiments/train.py --config=experiments/configs/acf_mnist.py:iresnet_l2 \
        --workdir=runs/acf_mnist_iresnet_l2
    python experiments/train.py --config=experiments/configs/acf_mnist.py:small \
        --workdir=runs/acf_mnist_small

Mukherjee, Patro, Namboodiri, *Attentive Contractive Flow with Lipschitz Constrained
Self-Attention*, arXiv:2109.12135. ACF adds Lipschitz-constrained self-attention (L2
multi-head attention, Kim et al. 2021, or LipschitzNorm dot-product attention, Dasoulas
et al. 2021) to the residual branches of a contractive flow, **between the
convolutions** (on the hidden features before the last Lipschitz convolution), keeping
every branch a contraction (see jaxflows/models/acf.py).

Default: Table 1's ResFlow + L2SA row (0.90 bits/dim) with the paper's best MNIST
setting, **4 heads** (Table 2): the Residual Flow MNIST config (``resflow_mnist.py``:
TFDS ``mnist``, logit alpha 1e-6, 3 scales 28 -> 14 -> 7 of 16 LipSwish blocks with 512
channels, no factor-out, 4 fully connected end blocks, Russian-roulette log-det; Adam
1e-3, betas 0.9/0.99, clipping at norm 1) with the attention over 784, 196 and 49
tokens of 512 features. See acf_table1.py for the rows and the departures.

Variants:

* ``resflow_l2`` (= default), ``iresnet_l2`` (0.87; i-ResNet layout, MNIST padded to
  32x32), ``resflow_lipnorm`` (1.14; one head), ``idensenet_l2`` (no MNIST result in
  the paper; the grid's completeness): Table 1's rows.
* ``first``: ResFlow + L2 with the attention first in the branch, on the 1/4/16 raw
  channels, one head (this library's earlier placement).
* ``small``: :func:`experiments.configs.common.acf_small`, the offline ``digits`` dataset
  (8x8, 17 levels) with the layout and optimisation of the attention ablations
  (experiments/ablations.py): 2 levels, each a squeeze then 2 residual blocks of hidden
  width 32, factor-out with N(0, I), one L2 head between the convolutions; Adam 1e-3
  with cosine decay, 300 steps.
* ``small_mnist``: the real MNIST digits (``mnist_8k``, 28x28) with the ``small`` layout,
  4 L2 heads between the convolutions (the paper's MNIST setting) starting at
  ``gamma = 1``, batch 32, 1,200 steps: the layout of the MNIST ablations
  (``experiments/ablations_mnist.py``; :func:`experiments.configs.common.acf_small_mnist`).
"""
import ml_collections

from experiments.configs import acf_table1, common

VARIANTS = ("", "resflow_l2", "iresnet_l2", "resflow_lipnorm", "idensenet_l2", "first",
            "small", "small_mnist")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    common.check_variant("acf_mnist", arg, VARIANTS)
    if arg == "small_mnist":
        return common.acf_small_mnist()
    return acf_table1.variant("mnist", arg, default="resflow_l2", first_heads=1)
