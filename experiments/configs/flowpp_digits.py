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
from jaxflows.train import default_config, set_fields

VARIANTS = ("", "small")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    common.check_variant("flowpp_digits", arg, VARIANTS)
    c = common.digits_splits(default_config())
    c.seed = 0
    set_fields(c, model=dict(
        name="flowpp", layout="checkerboard*2,squeeze,channel*2,checkerboard*2",
        components=8, hidden_channels=32, num_blocks=2, heads=2, dequantizer_steps=2,
        dequantizer_blocks=1, context_channels=16, context_blocks=1))
    set_fields(
        c, batch_size=64, eval_batch_size=300, init_batch_size=256, num_train_steps=3000,
        optim=dict(name="adam", learning_rate=1e-3, warmup_steps=100, schedule="cosine",
                   final_lr_fraction=0.1, grad_clip_norm=1.0),
        ema_decay=0.99, log_every=50, eval_every=100, checkpoint_every=500,
        keep_checkpoints=2, sample_temperatures=(0.7, 1.0), num_samples=64)

    if arg == "small":
        set_fields(c, model=dict(components=4, hidden_channels=16, num_blocks=1,
                                 context_channels=8),
                   num_train_steps=300, checkpoint_every=100)
    return c
