r"""Attentive Contractive Flow on ImageNet64 (Mukherjee et al., arXiv:2109.12135, Table 1).

    python experiments/train.py --config=experiments/configs/acf_imagenet64.py \
        --workdir=runs/acf_imagenet64

Table 1's ImageNet64 row: ResFlow + L2SA (3.70 bits/dim): the CIFAR-10 Residual Flow
blocks with 4 levels on TFDS ``downsampled_imagenet/64x64`` (prepare it once with
``tfds build``), L2 attention between the convolutions with 16 heads (assumed, see
acf_table1.py). The first level attends over 4,096 tokens: a 4,096 x 4,096 score matrix
per head, image and block (a large-accelerator job; lower ``batch_size`` or use
``model.placement="first"`` at the same cost).
"""
import ml_collections

from experiments.configs import acf_table1, common

VARIANTS = ("",)


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    common.check_variant("acf_imagenet64", arg, VARIANTS)
    return acf_table1.row("imagenet64", "resflow_l2")
