"""The rows of ACF's Table 1 as configs (Mukherjee, Patro & Namboodiri, arXiv:2109.12135).

Not a config itself (no ``get_config``): ``acf_mnist.py``, ``acf_cifar10.py``,
``acf_imagenet32.py`` and ``acf_imagenet64.py`` build their variants with :func:`row`
(:func:`variant` for the MNIST and CIFAR-10 variants).

Table 1 rows and where they have a result: iResNet + L2SA (MNIST 0.87, CIFAR-10 3.40),
ResFlow + L2SA (MNIST 0.90, CIFAR-10 3.34, ImageNet32 3.86, ImageNet64 3.70), ResFlow +
LipNorm (MNIST 1.14, CIFAR-10 3.05), iDenseNet + L2SA (CIFAR-10 3.14, ImageNet32 3.75;
MNIST has no entry, the config exists for the issue's grid). CelebA-HQ64 is used by the
paper only for interpolations, and TFDS has no prepared 64x64 CelebA-HQ (``celeb_a_hq``
needs a manual download of the 1024x1024 images), so it has no config here.

Every row is its base model's config in this repository (``resflow_*``, ``iresnet_cifar10``,
``idensenet_cifar10``: the architectures and optimisers of the base papers' reference
code, since ACF's supplement with "model-specific details" is not available) with the
attention **between the convolutions** of every convolutional residual branch (ACF Sec.
3; ``placement="between"``), in its normalised, contractive form (``output="normalised"``;
ACF's Eq. 13 form is ``model.output="eq13"``). Heads: L2 attention with 4 heads on MNIST
and 16 on CIFAR-10 (ACF Sec. 4.2 and Table 2, the best settings); the paper states no
heads for ImageNet: 16 (CIFAR-10's) is used. LipNorm: one head (the paper mentions
multiple heads for L2 attention only) and the derived bound (``model.bound="paper"`` for
Eq. 15's constant, which is not a bound: docs/attention.md).

Departures forced by the shapes: the i-ResNet layout squeezes before every level
(``init_ds=2``), so its MNIST row pads the digits to 32x32 (``dataset.pad = 2``; bits/dim
over 1,024 dimensions, not comparable with 784-pixel figures). ImageNet64 uses 4 levels
(the Residual Flows reference's ImageNet64 depth) of the CIFAR-10 blocks.
"""
import ml_collections

from experiments.configs import common
from jaxflows.train import set_fields

ROWS = {
    "iresnet_l2": ("iresnet", "l2"),
    "resflow_l2": ("resflow", "l2"),
    "resflow_lipnorm": ("resflow", "lipnorm"),
    "idensenet_l2": ("idensenet", "l2"),
}
L2_HEADS = {"mnist": 4, "cifar10": 16, "imagenet32": 16, "imagenet64": 16}
_TFDS = {"mnist": "mnist", "cifar10": "cifar10", "imagenet32": "downsampled_imagenet/32x32",
         "imagenet64": "downsampled_imagenet/64x64"}
_BOUNDARY = {"mnist": "55000", "cifar10": "45000", "imagenet32": "98%", "imagenet64": "98%"}


def _base_config(base: str, dataset: str) -> ml_collections.ConfigDict:
    from experiments.configs import (
        idensenet_cifar10,
        iresnet_cifar10,
        resflow_cifar10,
        resflow_mnist,
    )
    if base == "resflow":
        c = resflow_mnist.get_config() if dataset == "mnist" else resflow_cifar10.get_config()
    elif base == "iresnet":
        c = iresnet_cifar10.get_config()
    else:
        c = idensenet_cifar10.get_config()
    # TFDS name and held-out end of train (ImageNet's test split is TFDS validation,
    # jaxflows.data)
    common.held_out_splits(c, _TFDS[dataset], _BOUNDARY[dataset])
    if dataset == "mnist":
        if base == "iresnet":
            c.dataset.pad = 2                 # three squeezes before the levels: 32x32
        else:
            c.model.alpha = 1e-6              # Residual Flows' MNIST logit margin
    elif dataset == "imagenet64":
        c.model.levels = 4
    return c


def variant(dataset: str, arg: str, *, default: str,
            first_heads: int) -> ml_collections.ConfigDict:
    """The config of variant ``arg`` of ``acf_<dataset>.py`` (``"mnist"`` or ``"cifar10"``).

    ``""``: Table 1 row ``default``; a key of :data:`ROWS`: that row; ``"first"``: row
    ``default`` with the attention first in the branch (``placement="first"``, this
    library's earlier placement) and ``first_heads`` heads; ``"small"``: the ``digits``
    variant :func:`experiments.configs.common.acf_small`.
    """
    if arg == "small":
        return common.acf_small()
    if arg == "first":
        return set_fields(row(dataset, default, placement="first"),
                          model=dict(heads=first_heads))
    return row(dataset, arg or default)


def row(dataset: str, name: str, *, placement: str = "between") -> ml_collections.ConfigDict:
    """The config of Table 1 row ``name`` (a key of :data:`ROWS`) on ``dataset``
    (``"mnist"``, ``"cifar10"``, ``"imagenet32"`` or ``"imagenet64"``).
    """
    base, attention = ROWS[name]
    c = _base_config(base, dataset)
    return set_fields(c, model=dict(name="acf", base=base, attention=attention,
                                    heads=L2_HEADS[dataset] if attention == "l2" else 1,
                                    placement=placement))
