r"""AttnFlow on CIFAR-10 (Sukthanker et al., CVPR 2022); small variant on digits.

    python experiments/train.py --config=experiments/configs/attnflow_cifar10.py \
        --workdir=runs/attnflow_cifar10                  # iMap on mAR-SCF (default)
    python experiments/train.py --config=experiments/configs/attnflow_cifar10.py:itrans \
        --workdir=runs/attnflow_cifar10_itrans
    python experiments/train.py --config=experiments/configs/attnflow_cifar10.py:small \
        --workdir=runs/attnflow_cifar10_small

Sukthanker, Huang, Kumar, Timofte, Van Gool, *Generative Flows with Invertible
Attentions*, CVPR 2022. The paper's CIFAR-10 model (supplement Sec. 4 and Table 1):
**mARFlow (mAR-SCF) as the backbone** with AttnFlow's L=3 levels of K=4 steps, each
ActNorm -> 1x1 conv -> MixLogCDF coupling (32 components, Flow++ conditioner of 10
blocks with 4 heads, dropout 0.2, 256 filters as ``mar_scf_cifar10.py:mixlogcdf``) with
the mAR ConvLSTM priors, and the invertible attention at **pos-4**; Adam at 8e-4,
**batch 32**, **90k iterations** (supplement Sec. 4; its Table 1 also says 100 epochs).
Warm-up (2,000 steps) and EMA 0.999 are this project's additions; 45k/5k
train/validation. The paper reports 3.216 bits/dim (iMap) and 3.217 (iTrans). The 32x32
images give 16x16, 8x8 and 4x4 levels. Full config: TFDS ``cifar10``.

Variants:

* ``""`` or ``imap``: iMap at pos-4 on mAR-SCF.
* ``itrans``: iTrans with **5 summed heads** (the supplement's best on CIFAR-10) over
  tokens of half the level's side (see attnflow_mnist.py).
* ``glow``: the same layout on a Glow backbone (not the paper's CIFAR-10 backbone).
* ``small``: the digits variant of attnflow_mnist.py
  (:func:`experiments.configs.common.attnflow_digits_small`).
"""
import ml_collections

from experiments.configs import common
from jaxflows.train import default_config

VARIANTS = ("", "imap", "itrans", "glow", "small")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    common.check_variant("attnflow_cifar10", arg, VARIANTS)
    c = common.held_out_splits(default_config(), "cifar10", "45000")
    c.seed = 0
    c.model = common.attnflow_paper_model(steps_per_level=4, hidden_channels=256)
    common.attnflow_paper_schedule(c, num_train_steps=90_000, warmup_steps=2000)
    return common.attnflow_variant(c, arg, steps_per_level=4)
