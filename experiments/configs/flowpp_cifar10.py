r"""Flow++ on CIFAR-10 (Ho et al. 2019), the reference code's model (``flows/run_cifar.py``).

    python experiments/train.py --config=experiments/configs/flowpp_cifar10.py \
        --workdir=runs/flowpp_cifar10
    python experiments/evaluate.py --workdir=runs/flowpp_cifar10 --iw_samples=4096

Model (the defaults of :func:`jaxflows.models.flowpp`): logit preprocessing (margin 0.05);
checkerboard x 4, squeeze, channel x 2, checkerboard x 3, no factor-out; each step
per-pixel ActNorm, a plain 1x1 convolution and a MixLogCDF coupling with K = 32
components whose conditioner has 96 filters, 10 blocks of gated convolution and 4-head
self-attention, dropout 0.2; variational dequantisation by a 4-coupling flow (2 blocks per
conditioner, a 32-channel context network of 3 gated convolutions). The reference's
departures we do not copy (its "checkerboard" is a column split) are listed in the
factory's docstring.

Training (reference code): Adam, learning rate 3e-4 with 2,000 linear warm-up steps and no
decay, batch 64, gradient-norm clipping at 1, EMA 0.999 for evaluation. Paper: 3.08
bits/dim on the test set with the importance-weighted bound (S = 4,096), after about
3,000 epochs on 8 GPUs (ablation table at 400 epochs: 3.165). ``:small`` is the same
pipeline on 2 blocks of 16 filters, K = 4, for a smoke run on a CPU.
"""
import ml_collections

from experiments.configs import common
from jaxflows.train import default_config, set_fields

VARIANTS = ("", "small")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    common.check_variant("flowpp_cifar10", arg, VARIANTS)
    c = common.held_out_splits(default_config(), "cifar10", "95%")
    c.model.name = "flowpp"           # the factory's defaults are the paper's model
    set_fields(
        c, batch_size=64, eval_batch_size=500,
        init_batch_size=128,          # the reference's init_bs
        num_train_steps=1_000_000,
        optim=dict(name="adam", learning_rate=3e-4, warmup_steps=2000, grad_clip_norm=1.0),
        ema_decay=0.999, log_every=100, eval_every=10_000, checkpoint_every=5000)

    if arg == "small":
        set_fields(c, model=dict(
            components=4, hidden_channels=16, num_blocks=1, heads=2,
            layout="squeeze,checkerboard*2,channel*2", dequantizer_blocks=1,
            dequantizer_steps=2, context_channels=8, context_blocks=1,
            dequantizer_attention=False))
        common.cifar10_small_schedule(c, batch_size=16, init_batch_size=64,
                                      num_train_steps=100, warmup_steps=20)
    return c
