r"""cAttnFlow segmentation-to-image on offline data: a digit from its foreground mask.

    python experiments/train.py --config=experiments/configs/cattnflow_seg_mnist.py \
        --workdir=runs/seg_mnist
    python experiments/train.py --config=experiments/configs/cattnflow_seg_mnist.py:twin \
        --workdir=runs/seg_mnist_twin                 # the unconditional twin
    python experiments/conditional_demo.py --workdir=runs/seg_mnist --out=seg.png

The stand-in for the AttnFlow source's Cityscapes segmentation-to-image task (supplement
Sec. 3-4: ``p(image | segmentation map)``, L = 2, K = 8, batch 1, Adam 8e-4), built from
data that is here: each real MNIST digit (``mnist_8k``) is the image and its thresholded
foreground mask the two-class map (``config.dataset.context = "mask:128"``: 1 where the
pixel is at least 128 of 255, int32 ``[B, 28, 28]``, computed by the trainer from the
integer image). The model is ``jaxflows.models.cattnflow`` with ``num_classes=2``: the
map is encoded by its segmentation encoder (one-hot classes, convolutions) into the
per-level context of SRFlow's affine injectors, conditional couplings and conditional
split priors, with iMap attention after every coupling (pos-4), the source's L = 2 and
K = 8 at a CPU width (64 hidden channels), batch 32 instead of the source's 1, and Adam
at the source's 8e-4 with a cosine decay over 1,500 steps.

Variants:

* ``""``: the conditional model above.
* ``twin``: its unconditional twin, ``jaxflows.models.attnflow`` with the same levels,
  steps, width, attention and training; conditional and unconditional test bits/dim are
  of the same held-out digits.
* ``digits``, ``digits_twin``: the same on scikit-learn's 8x8 digits (17 levels, mask
  threshold 8), 300 steps (a quick check).

Cityscapes itself is ``experiments/configs/cattnflow_cityscapes.py`` (the dataset's own
label maps through ``config.dataset.context = "segmentation"``; its ``small`` variant trains
offline on ``mnist_8k_seg``, digits with 11-class semantic maps). This config keeps the
two-class mask computed from each image.
"""
import ml_collections

from experiments.configs import common
from jaxflows.train import default_config, set_fields

VARIANTS = ("", "twin", "digits", "digits_twin")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    common.check_variant("cattnflow_seg_mnist", arg, VARIANTS)
    c = default_config()
    c.seed = 0
    digits = arg.startswith("digits")
    if digits:
        common.digits_splits(c)
        c.dataset.context = "mask:8"
    else:
        common.mnist_8k_splits(c)
        c.dataset.context = "mask:128"
    side = 8 if digits else 28
    arch = dict(levels=2, steps_per_level=4 if digits else 8,
                hidden_channels=32 if digits else 64, attention="imap", position=4)
    if arg.endswith("twin"):
        c.dataset.context = ""
        set_fields(c, model=dict(name="attnflow", **arch))
    else:
        set_fields(c, model=dict(name="cattnflow", num_classes=2, context_shape=(side, side),
                                 seg_features=16, seg_layers=2, **arch))
    steps = 300 if digits else 1500
    set_fields(
        c, batch_size=64 if digits else 32, eval_batch_size=300 if digits else 200,
        init_batch_size=256, num_train_steps=steps,
        optim=dict(name="adam", learning_rate=8e-4, warmup_steps=50, schedule="cosine"),
        log_every=50, eval_every=steps // 3, checkpoint_every=steps // 3,
        sample_temperatures=(0.5, 1.0), num_samples=32)
    return c
