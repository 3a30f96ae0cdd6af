r"""Flow++ on ``digits`` (8x8, 17 levels), offline: a CPU-sized Flow++.

    python experiments/train.py --config=experiments/configs/flowpp_digits.py \
        --workdir=runs/flowpp_digits
    python experiments/evaluate.py --workdir=runs/flowpp_digits --iw_samples=256

The paper's layout at 8x8 (checkerboard x 2, squeeze to 4x4x4, channel x 2,
checkerboard x 2; every step per-pixel ActNorm, 1x1 convolution, MixLogCDF coupling)
with K = 8 components, a 32-filter conditioner of 2 gated-convolution/attention blocks
(2 heads, dropout 0.2) and a 2-coupling variational dequantiser; Adam 1e-3 with 100
warm-up steps and cosine decay, gradient clipping at 1 (Flow++), EMA 0.99. ``:small``:
K = 4, 16 filters, 1 block, 300 steps (a few CPU-minutes). Reference figures on this
split are in ``glow_digits.py`` (independent per-pixel categoricals: 2.37 test bits/dim).
"""
import ml_collections

from experiments.configs import common
from jaxflows.train import default_config

VARIANTS = ("", "small")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    common.check_variant("flowpp_digits", arg, VARIANTS)
    c = common.digits_splits(default_config())
    c.seed = 0

    c.model.name = "flowpp"
    c.model.layout = "checkerboard*2,squeeze,channel*2,checkerboard*2"
    c.model.components = 8
    c.model.hidden_channels = 32
    c.model.num_blocks = 2
    c.model.heads = 2
    c.model.dequantizer_steps = 2
    c.model.dequantizer_blocks = 1
    c.model.context_channels = 16
    c.model.context_blocks = 1

    c.batch_size = 64
    c.eval_batch_size = 300
    c.init_batch_size = 256
    c.num_train_steps = 3000
    c.optim.name = "adam"
    c.optim.learning_rate = 1e-3
    c.optim.warmup_steps = 100
    c.optim.schedule = "cosine"
    c.optim.final_lr_fraction = 0.1
    c.optim.grad_clip_norm = 1.0
    c.ema_decay = 0.99

    c.log_every = 50
    c.eval_every = 100
    c.checkpoint_every = 500
    c.keep_checkpoints = 2
    c.sample_temperatures = (0.7, 1.0)
    c.num_samples = 64

    if arg == "small":
        c.model.components = 4
        c.model.hidden_channels = 16
        c.model.num_blocks = 1
        c.model.context_channels = 8
        c.num_train_steps = 300
        c.checkpoint_every = 100
    return c
