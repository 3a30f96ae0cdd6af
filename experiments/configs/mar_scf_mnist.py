r"""mAR-SCF on MNIST (affine or MixLogCDF couplings); small variants on digits and on MNIST digits.

    python experiments/train.py --config=experiments/configs/mar_scf_mnist.py \
        --workdir=runs/mar_scf_mnist
    python experiments/train.py --config=experiments/configs/mar_scf_mnist.py:small \
        --workdir=runs/mar_scf_digits                 # digits, CPU minutes
    python experiments/train.py --config=experiments/configs/mar_scf_mnist.py:small_mnist \
        --workdir=runs/mar_scf_mnist_small            # mnist_8k, no download
    python experiments/train.py --config=experiments/configs/mar_scf_mnist.py:mixlogcdf \
        --workdir=runs/mar_scf_mnist_mixlogcdf        # the paper's best MNIST model

Bhattacharyya, Mahajan, Fritz, Schiele & Roth, *Normalizing Flows with Multi-Scale
Autoregressive Priors*, CVPR 2020 (supplement Sec. B; reference code ``visinf/mar-scf``).
The paper's MNIST model: L = 3 levels, each squeeze -> K = 32 steps of ActNorm, LU 1x1
convolution and affine coupling -> split, with the mAR ConvLSTM prior (3 layers of 32
channels; kernel/dilation 5/2, 5/1, 3/1 by level) on every factored-out half and on the
top level: ``jaxflows.models.mar_scf``'s defaults (512 hidden channels, as the reference's
default width), so ``config.model`` names the model only.

Optimiser: Adamax at 8e-4 with a linear warm-up, batch 128 (the reference's defaults).
The reference computes its warm-up as ``min(1, s / 10000)`` with ``s`` counting
**samples** (``global_step += batch_size``), i.e. 10,000 / 128 = 78 steps, although it is
presented as 10,000 steps; this config states the warm-up in steps and uses the 78 that
the reference actually ran (``optim.warmup_steps = 10000`` gives the other reading).

Data: three squeezes need 32x32 inputs; the reference pads MNIST to 32x32 **and copies it
to 3 channels**, so its bits/dim are over 3 x 32 x 32 dimensions, two thirds of which are
copies. Here the pipeline pads to 32x32x1 (``dataset.pad = 2``): bits/dim are over 1,024
dimensions, whose 240 border pixels are nearly free, so they are comparable with neither
the paper's 0.88 (its D) nor with 784-pixel figures. Full config: TFDS ``mnist`` (prepare
it once: ``tfds build mnist --file_format=array_record``).

Variants:

* ``mixlogcdf``: the paper's best model (0.88 bits/dim over its 3 x 32 x 32 dimensions):
  K = 4 MixLogCDF steps per level (32 components; Flow++ conditioner with 10 blocks, 4
  heads, dropout 0.2), 96 filters (the reference README's example width; its default is
  512).
* ``small_mixlogcdf``: ``digits`` with MixLogCDF couplings: L = 2, K = 2, 8 components, a
  conditioner of 32 filters in 2 blocks with 2 heads, dropout 0.1; the rest as ``small``.
* ``small``: ``digits`` (8x8, 17 levels; no padding), L = 2, K = 4, 32 hidden channels,
  priors of 16 channels in 2 layers with 3x3 kernels, logit preprocessing, Adam with
  cosine decay, 1,500 steps of batch 64.
* ``small_mnist``: ``mnist_8k`` (8,000 real MNIST digits shipped in ``jaxflows.data``,
  28x28, not padded), L = 2 (28 = 7 x 2^2), K = 4, 48 hidden channels, priors of 16
  channels in 2 layers (kernel/dilation 5/2 and 3/1), logit preprocessing, 1,500 steps
  of batch 32.
* ``small_mnist_mixlogcdf``: ``small_mnist`` with the MixLogCDF couplings of
  ``small_mixlogcdf`` (K = 2, 8 components, a conditioner of 48 filters in 2 blocks
  with 2 heads, dropout 0.1).
"""
import ml_collections

from experiments.configs import common
from jaxflows.train import default_config, set_fields

VARIANTS = ("", "small", "small_mnist", "mixlogcdf", "small_mixlogcdf", "small_mnist_mixlogcdf")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    common.check_variant("mar_scf_mnist", arg, VARIANTS)
    c = common.held_out_splits(default_config(), "mnist", "55000")
    c.seed = 0
    c.dataset.pad = 2                      # 28x28 -> 32x32x1 (the reference: 32x32x3)
    c.model.name = "mar_scf"               # the factory's defaults: L=3, K=32, affine
    # Adamax 8e-4, warm-up 78 steps (the reference's 10,000 samples at batch 128)
    common.mar_scf_reference_schedule(c, batch_size=128, num_train_steps=100_000)

    if arg == "mixlogcdf":
        common.mar_scf_mixlogcdf(c, hidden_channels=96)   # K = 4, 32 components, 10 blocks
    if arg in ("small", "small_mnist", "small_mixlogcdf", "small_mnist_mixlogcdf"):
        c.model = ml_collections.ConfigDict(dict(
            name="mar_scf", levels=2, steps_per_level=4, hidden_channels=32,
            lstm_features=16, lstm_layers=2, kernel_sizes=(3, 3), dilations=(1, 1),
            preprocessing="logit"))
        set_fields(
            c, batch_size=64, eval_batch_size=300, init_batch_size=256, num_train_steps=1500,
            optim=dict(name="adam", learning_rate=1e-3, warmup_steps=50, schedule="cosine",
                       final_lr_fraction=0.1),
            ema_decay=0.99, log_every=50, eval_every=250, checkpoint_every=250,
            num_samples=36, sample_temperatures=(0.7, 1.0))
        if arg == "small":
            common.digits_splits(c)
        elif arg == "small_mixlogcdf":
            common.digits_splits(c)
            set_fields(c, model=dict(coupling="mixlogcdf", steps_per_level=2, components=8,
                                     num_blocks=2, heads=2, dropout=0.1))
        else:
            common.mnist_8k_splits(c)
            set_fields(c, model=dict(hidden_channels=48, kernel_sizes=(5, 3), dilations=(2, 1)),
                       batch_size=32, eval_batch_size=400)
            if arg == "small_mnist_mixlogcdf":
                set_fields(c, model=dict(coupling="mixlogcdf", steps_per_level=2, components=8,
                                         num_blocks=2, heads=2, dropout=0.1))
    return c
