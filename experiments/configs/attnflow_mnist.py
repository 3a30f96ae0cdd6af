r"""AttnFlow on MNIST (Sukthanker et al., CVPR 2022); small variant on digits.

    python experiments/train.py --config=experiments/configs/attnflow_mnist.py \
        --workdir=runs/attnflow_mnist                    # iMap on mAR-SCF (default)
    python experiments/train.py --config=experiments/configs/attnflow_mnist.py:itrans \
        --workdir=runs/attnflow_mnist_itrans             # iTrans, 5 heads
    python experiments/train.py --config=experiments/configs/attnflow_mnist.py:small \
        --workdir=runs/attnflow_mnist_small              # digits, CPU minutes

Sukthanker, Huang, Kumar, Timofte, Van Gool, *Generative Flows with Invertible
Attentions*, CVPR 2022. The paper's MNIST model (supplement Sec. 4 and Table 1):
**mARFlow (mAR-SCF) as the backbone** "with the same levels and steps" as AttnFlow,
L=3 levels of K=2 steps, each step ActNorm -> 1x1 conv -> MixLogCDF coupling (mAR-SCF's
best coupling: 32 logistic components, Flow++ conditioner of 10 blocks with 4 heads,
dropout 0.2, 96 filters as ``mar_scf_mnist.py:mixlogcdf``) with the mAR ConvLSTM priors,
and the invertible attention at **pos-4** (after each coupling: the supplement's best
position, Fig. 8, and its Fig. 2b layout); Adam at 8e-4 (footnote 1), **batch 32**,
100k iterations. The warm-up (1,000 steps) and EMA 0.999 for evaluation are this
project's additions. The paper pads or resizes 28x28 MNIST for L=3 without saying how;
here the pipeline pads with 2 zero pixels on each side (``dataset.pad = 2``), so the
model sees 32x32x1 and its levels are 16x16x4, 8x8x8 and 4x4x16. Bits/dim are over the
1,024 padded dimensions (240 border pixels nearly free): **not comparable** with figures
over the 784 MNIST pixels. The paper trains on "the whole dataset"; here 55k/5k
train/validation, the test split for reporting.

Variants (``--config=...attnflow_mnist.py:<variant>``):

* ``""`` or ``imap``: iMap attention (map-based) at pos-4 on mAR-SCF.
* ``itrans``: iTrans with **5 summed heads** (the supplement's best on MNIST, Fig. 9;
  each head has its own query/key projection, so 5 need not divide the channels) over
  tokens of **half the level's side** (8x8, 4x4, 2x2: a 2 x 2 grid, the supplement's
  pseudo-code), the diagonally dominant matrix (invertible by construction; the paper's
  free offset is ``model.matrix_form="offset"``, its attention-weight checkerboard
  ``model.attention_mask="checkerboard"``).
* ``glow``: the same with a Glow backbone (affine couplings, hidden 512, learned split
  prior), as this library had it before; not the paper's MNIST backbone.
* ``small``: the offline ``digits`` dataset (8x8, 17 levels, no padding) with the
  protocol of ``glow_digits.py:small`` (Glow backbone, 2 levels, K=2, 32 hidden channels,
  iTrans with 2 heads over 2x2 tokens at pos-1, 300 steps;
  :func:`experiments.configs.common.attnflow_digits_small`).
* ``small_mnist``: the real MNIST digits (``mnist_8k``, padded to 32x32) at CPU scale,
  the layout of the MNIST ablations (``experiments/ablations_mnist.py``): mAR-SCF backbone
  with L=2, K=2 affine steps of 32 hidden channels, iMap at pos-4, batch 32, Adam 8e-4,
  1,200 steps (:func:`experiments.configs.common.attnflow_small_mnist`).

Full configs: TFDS ``mnist`` (prepare it once: ``tfds build mnist --file_format=array_record``).
See glow_digits.py for the config schema.
"""
import ml_collections

from experiments.configs import common
from jaxflows.train import default_config

VARIANTS = ("", "imap", "itrans", "glow", "small", "small_mnist")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    common.check_variant("attnflow_mnist", arg, VARIANTS)
    if arg == "small_mnist":
        return common.attnflow_small_mnist()
    c = common.held_out_splits(default_config(), "mnist", "55000")
    c.seed = 0
    c.dataset.pad = 2             # 28x28 -> 32x32: three squeezes (L=3)
    c.model = common.attnflow_paper_model(steps_per_level=2, hidden_channels=96)
    common.attnflow_paper_schedule(c, num_train_steps=100_000, warmup_steps=1000)
    return common.attnflow_variant(c, arg, steps_per_level=2)
