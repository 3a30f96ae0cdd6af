r"""Attentive Contractive Flow on CIFAR-10 (Mukherjee et al., arXiv:2109.12135); small on digits.

    python experiments/train.py --config=experiments/configs/acf_cifar10.py \
        --workdir=runs/acf_cifar10
    python experiments/train.py --config=experiments/configs/acf_cifar10.py:resflow_l2 \
        --workdir=runs/acf_cifar10_l2
    python experiments/train.py --config=experiments/configs/acf_cifar10.py:small \
        --workdir=runs/acf_cifar10_small

Mukherjee, Patro, Namboodiri, *Attentive Contractive Flow with Lipschitz Constrained
Self-Attention*, arXiv:2109.12135. Default: Table 1's best CIFAR-10 row, ResFlow +
LipNorm (3.05 bits/dim): **the Residual Flow CIFAR-10 config** (``resflow_cifar10.py``:
logit alpha 0.05, 3 scales of 16 LipSwish blocks with 512 channels, no factor-out, 4
fully connected end blocks, Russian-roulette log-det; Adam 1e-3, betas 0.9/0.99,
clipping at norm 1, 300,000 steps) with LipschitzNorm dot-product attention (one head,
the derived bound) **between the convolutions** of every convolutional branch: over
1,024, 256 and 64 tokens of 512 features. Full config: TFDS ``cifar10``. See
acf_table1.py for the rows and the departures.

Variants:

* ``resflow_lipnorm`` (= default), ``resflow_l2`` (3.34, **16 heads**, the paper's best
  CIFAR-10 setting, Table 2), ``iresnet_l2`` (3.40), ``idensenet_l2`` (3.14): Table 1.
* ``first``: ResFlow + LipNorm first in the branch, on the 3/12/48 raw channels, with
  3 heads (this library's earlier placement and heads).
* ``small``: the digits variant of acf_mnist.py (:func:`experiments.configs.common.acf_small`).
"""
import ml_collections

from experiments.configs import acf_table1, common

VARIANTS = ("", "resflow_lipnorm", "resflow_l2", "iresnet_l2", "idensenet_l2", "first",
            "small")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    common.check_variant("acf_cifar10", arg, VARIANTS)
    return acf_table1.variant("cifar10", arg, default="resflow_lipnorm", first_heads=3)
