r"""mAR-SCF (affine couplings) on CIFAR-10 at the paper's settings (for accelerators).

    python experiments/train.py --config=experiments/configs/mar_scf_cifar10.py \
        --workdir=runs/mar_scf_cifar10

Bhattacharyya et al., *Normalizing Flows with Multi-Scale Autoregressive Priors*, CVPR
2020 (supplement Sec. A-B). L = 3 levels of K = 32 affine steps (ActNorm, LU 1x1
convolution, Glow's affine coupling with 512 hidden channels) with the mAR ConvLSTM prior
(3 layers of 32 channels; kernel/dilation 5/2, 5/1, 3/1 by level) on the factored-out
halves (6 channels at 16x16 and 12 at 8x8) and on the top level (48 channels at 4x4):
66 sequential sampling steps (Lemma A.1). These are ``jaxflows.models.mar_scf``'s
defaults. Adamax 8e-4 at batch 64 (the reference's CIFAR setting), warm-up stated in
steps: the reference's ``min(1, s / 10000)`` counts samples, 10,000 / 64 = 156 steps (see
mar_scf_mnist.py). The reference also augments CIFAR with a random +-3 pixel shift and
horizontal flips, which this pipeline does not do. The paper reports 3.24 bits/dim for
its MixLogCDF model (~400 epochs); the affine model is its weaker row.

Variant ``mixlogcdf``: the paper's best model, K = 4 MixLogCDF steps per level (32
components; Flow++ conditioner of 10 blocks, 4 heads, dropout 0.2) with 256 filters, the
width of the reference's released checkpoint (3.22 bits/dim, FID 33.6 after ~1,000
epochs; the paper: 3.24).

Needs TFDS ``cifar10`` (prepare it once: ``tfds build cifar10 --file_format=array_record``).
"""
import ml_collections

from experiments.configs import common
from jaxflows.train import default_config

VARIANTS = ("", "mixlogcdf")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    common.check_variant("mar_scf_cifar10", arg, VARIANTS)
    c = common.held_out_splits(default_config(), "cifar10", "45000")
    c.seed = 0
    c.model.name = "mar_scf"               # the factory's defaults: L=3, K=32, affine
    # Adamax 8e-4, warm-up 156 steps (the reference's 10,000 samples at batch 64)
    common.mar_scf_reference_schedule(c, batch_size=64, num_train_steps=300_000)
    if arg == "mixlogcdf":
        # K = 4, 32 components, 10 blocks, 4 heads; the released checkpoint's width
        common.mar_scf_mixlogcdf(c, hidden_channels=256)
    return c
