r"""Attentive Contractive Flow on ImageNet32 (Mukherjee et al., arXiv:2109.12135, Table 1).

    python experiments/train.py --config=experiments/configs/acf_imagenet32.py \
        --workdir=runs/acf_imagenet32
    python experiments/train.py --config=experiments/configs/acf_imagenet32.py:idensenet_l2 \
        --workdir=runs/acf_imagenet32_idensenet

Table 1's ImageNet32 rows: ResFlow + L2SA (default, 3.86 bits/dim) and iDenseNet + L2SA
(``idensenet_l2``, 3.75): the CIFAR-10 Residual Flow / i-DenseNet configs on TFDS
``downsampled_imagenet/32x32`` (prepare it once: ``tfds build downsampled_imagenet/32x32
--file_format=array_record``; its validation split is the test split), with L2 attention
between the convolutions, 16 heads (the paper gives no ImageNet heads: CIFAR-10's).
See acf_table1.py.
"""
import ml_collections

from experiments.configs import acf_table1, common

VARIANTS = ("", "resflow_l2", "idensenet_l2")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    common.check_variant("acf_imagenet32", arg, VARIANTS)
    return acf_table1.row("imagenet32", arg or "resflow_l2")
