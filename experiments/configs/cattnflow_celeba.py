r"""cAttnFlow 8x face super-resolution on CelebA 160x160; SRFlow-like and offline variants.

    python experiments/train.py --config=experiments/configs/cattnflow_celeba.py \
        --workdir=runs/cattnflow_celeba
    python experiments/train.py --config=experiments/configs/cattnflow_celeba.py:srflow ...
    python experiments/train.py --config=experiments/configs/cattnflow_celeba.py:small ...

``p(HR | LR)`` with ``jaxflows.models.cattnflow``: SRFlow's conditional Glow (affine
injector, conditional coupling, conditional split prior, RRDB encoder of the LR image)
with an invertible attention (iMap) in every step (Sukthanker et al., CVPR 2022,
supplement Sec. 3-4; Lugmayr et al., ECCV 2020). ``config.dataset.context = "lowres:8"``
gives the flow the HR image box-averaged by 8 as its context. Samples at temperature
("heat") ``T`` are super-resolutions of the test images' LR versions.

Settings of the source (supplement Sec. 4): cAttnFlow-iMap with **L = 1, K = 1**, batch 16,
500k iterations, Adam 8e-4 (the source's AttnFlow learning rate, stated for MNIST/CIFAR;
used here for CelebA too); attention after the coupling (pos-4, the best position of the
source's ablation) and 3 iTrans heads (best on CelebA) when ``attention="itrans"``.
The ``srflow`` variant is SRFlow's released CelebA 8x model: **L = 4, K = 16**, RRDB with
8 blocks stacking blocks (1, 3, 5, 7), Adam 5e-4 (b2 0.99), 200k iterations, no attention
(``attention=None``; add one with ``--config.model.attention=imap``).

Inconsistencies of the source, and how they are resolved here:

* The supplement says the backbones use "the same levels and steps" as cAttnFlow, yet
  SRFlow's released CelebA config is L = 4, K = 16 while cAttnFlow-iMap is stated as
  L = 1, K = 1. Both are given: the default is the stated L = 1, K = 1, ``srflow`` is the
  SRFlow depth (the supplement's Sec. 8 reports attention as numerically unstable at that
  depth).
* The source's CelebA is 160x160 HR from 20x20 bicubic LR: ``jaxflows.data``'s
  ``celeb_a_160`` (TFDS ``celeb_a``, the central 178x178 square resized to 160x160; the
  source states no crop). The LR image is the trainer's box average (``lowres:8``), not
  MATLAB bicubic: PSNR figures are not directly comparable with the paper's.
* SRFlow dequantises at 1/32 (its NLL is not 8-bit bits/dim); here 8-bit bits/dim.
* The source does not state cAttnFlow's coupling width or RRDB settings: SRFlow's
  (64 channels, 8 RRDBs of width 64 and growth 32, stacked blocks 1, 3, 5, 7) are used.
* The source gives no step count for the attention heads' width; iMap has none.

``small``: the offline demonstration, 4x on ``digits`` (8x8 from 2x2), L = 2, K = 4.

``mnist``: 4x on the real MNIST digits (``mnist_8k``: 28x28 HR from 7x7 box-averaged LR,
``lowres:4``), cAttnFlow-iMap with L = 2, K = 4, coupling width 32, a small RRDB (2 blocks
of width 16, growth 8), 300 steps of batch 32 (a short CPU schedule).
``mnist_noattn`` is the same flow without attention; ``mnist_twin`` its unconditional twin
(``jaxflows.models.attnflow`` with the same levels, steps, width and iMap at pos-4, the
same data and schedule), so conditional and unconditional test bits/dim are of the same
held-out digits.

``patches``: the offline RGB demonstration, 4x on ``sklearn_patches`` (32x32x3 HR patches
from 8x8x3 box-averaged LR, ``lowres:4``), trained on the patches of scikit-learn's
``china.jpg`` (``train[:90%]`` / ``train[90%:]``: 878 / 97 patches) and tested on those of
``flower.jpg`` (975 patches, a different photograph): cAttnFlow-iMap with L = 2, K = 4,
coupling width 32, a small RRDB (2 blocks of width 16, growth 8), 200 steps of batch 16
(about 3.6 epochs: a short schedule sized for a shared 2-core CPU, far from converged).
``patches_noattn`` is the same flow without attention (``attention=None``), the
no-attention twin of the comparison.
"""
import ml_collections

from experiments.configs import common
from jaxflows.train import default_config, set_fields

VARIANTS = ("", "srflow", "small", "mnist", "mnist_noattn", "mnist_twin", "patches",
            "patches_noattn")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    common.check_variant("cattnflow_celeba", arg, VARIANTS)
    c = default_config()
    c.seed = 0
    set_fields(c, dataset=dict(name="celeb_a_160", train_split="train",
                               val_split="validation", test_split="test", context="lowres:8"))
    set_fields(c, model=dict(name="cattnflow", lr_shape=(20, 20, 3), scale=8, levels=1,
                             steps_per_level=1, attention="imap", position=4, heads=3))
    set_fields(
        c, batch_size=16, eval_batch_size=100, init_batch_size=64, num_train_steps=500_000,
        optim=dict(name="adam", learning_rate=8e-4),
        log_every=100, eval_every=5000, checkpoint_every=5000,
        sample_temperatures=(0.5, 0.9, 1.0), num_samples=16)

    if arg == "srflow":
        set_fields(c, model=dict(levels=4, steps_per_level=16, attention=None),
                   optim=dict(learning_rate=5e-4, b2=0.99), num_train_steps=200_000)
    elif arg == "small":
        common.digits_splits(c)
        c.dataset.context = "lowres:4"
        set_fields(c, model=dict(
            lr_shape=(2, 2, 1), scale=4, levels=2, steps_per_level=4, hidden_channels=32,
            rrdb_features=16, rrdb_growth=8, rrdb_blocks=2, stacked_blocks=(0,),
            preprocessing="logit", dropout=0.2))
        set_fields(
            c, batch_size=64, eval_batch_size=300, init_batch_size=512, num_train_steps=300,
            optim=dict(learning_rate=1e-3, warmup_steps=50),
            log_every=50, eval_every=100, checkpoint_every=100, num_samples=64)
    elif arg.startswith("mnist"):
        common.mnist_8k_splits(c)
        c.dataset.context = "lowres:4"
        arch = dict(levels=2, steps_per_level=4, hidden_channels=32)
        if arg == "mnist_twin":
            c.dataset.context = ""
            c.model = ml_collections.ConfigDict(dict(name="attnflow", attention="imap",
                                                     position=4, **arch))
        else:
            set_fields(c, model=dict(
                lr_shape=(7, 7, 1), scale=4, rrdb_features=16, rrdb_growth=8, rrdb_blocks=2,
                stacked_blocks=(0, 1), **arch))
            if arg == "mnist_noattn":
                c.model.attention = None
        set_fields(
            c, batch_size=32, eval_batch_size=200, init_batch_size=256, num_train_steps=300,
            optim=dict(learning_rate=1e-3, warmup_steps=30),
            log_every=50, eval_every=100, checkpoint_every=100, num_samples=16)
    elif arg in ("patches", "patches_noattn"):
        set_fields(c, dataset=dict(name="sklearn_patches", train_split="train[:90%]",
                                   val_split="train[90%:]", test_split="test",
                                   context="lowres:4"))
        set_fields(c, model=dict(
            lr_shape=(8, 8, 3), scale=4, levels=2, steps_per_level=4, hidden_channels=32,
            rrdb_features=16, rrdb_growth=8, rrdb_blocks=2, stacked_blocks=(0, 1),
            attention="imap" if arg == "patches" else None))
        set_fields(
            c, batch_size=16, eval_batch_size=128, init_batch_size=64, num_train_steps=200,
            optim=dict(learning_rate=1e-3, warmup_steps=30),
            log_every=25, eval_every=50, checkpoint_every=50, num_samples=16)
    return c
