r"""Flow++ on MNIST, and the Flow++ Table 2 ablation on the real MNIST digits (``mnist_8k``).

    python experiments/train.py --config=experiments/configs/flowpp_mnist.py:small \
        --workdir=runs/flowpp_mnist_small
    python experiments/evaluate.py --workdir=runs/flowpp_mnist_small --iw_samples=64

Default: full MNIST (TFDS), 28x28x1 with the paper's stage pattern after one squeeze
(squeeze to 14x14x4, checkerboard x 4, channel x 2, checkerboard x 3; attention over 196
positions), K = 32, 64 filters, 4 blocks, 4 heads, dropout 0.2, a 4-coupling variational
dequantiser whose conditioners (at 28x28) use the pointwise gated layer instead of
attention; Adam 3e-4, 2,000 warm-up steps, batch 64, clipping 1, EMA 0.999 (Flow++'s
CIFAR-10 recipe).

``:small`` trains on ``mnist_8k`` (8,000 real MNIST digits shipped with jaxflows) on a CPU:
K = 4, 16 filters, 1 block, 2 heads, squeeze then checkerboard x 2, channel x 2, a
2-coupling dequantiser, Adam 1e-3 with cosine decay, batch 32, 400 steps. The ablation
rows of Flow++ Table 2 are the variants ``small_uniform`` (uniform dequantisation),
``small_affine`` (affine couplings instead of MixLogCDF) and ``small_noattn``
(pointwise gated layers instead of self-attention); ``small`` is the full model.
"""
import ml_collections

from experiments.configs import common
from jaxflows.train import default_config, set_fields

VARIANTS = ("", "small", "small_uniform", "small_affine", "small_noattn")


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    common.check_variant("flowpp_mnist", arg, VARIANTS)
    c = common.held_out_splits(default_config(), "mnist", "55000")
    set_fields(c, model=dict(
        name="flowpp", layout="squeeze,checkerboard*4,channel*2,checkerboard*3",
        hidden_channels=64, num_blocks=4, dequantizer_attention=False))
    set_fields(
        c, batch_size=64, eval_batch_size=500, init_batch_size=128, num_train_steps=200_000,
        optim=dict(name="adam", learning_rate=3e-4, warmup_steps=2000, grad_clip_norm=1.0),
        ema_decay=0.999, log_every=100, eval_every=5000, checkpoint_every=5000)

    if arg.startswith("small"):
        common.mnist_8k_splits(c)
        set_fields(c, model=dict(
            layout="squeeze,checkerboard*2,channel*2", components=4, hidden_channels=16,
            num_blocks=1, heads=2, dequantizer_steps=2, dequantizer_blocks=1,
            context_channels=8, context_blocks=1))
        set_fields(
            c, batch_size=32, eval_batch_size=400, init_batch_size=128, num_train_steps=400,
            optim=dict(learning_rate=1e-3, warmup_steps=50, schedule="cosine",
                       final_lr_fraction=0.1),
            ema_decay=0.99, log_every=50, eval_every=200, checkpoint_every=200,
            num_samples=16)
        if arg == "small_uniform":
            c.model.dequantization = "uniform"
        elif arg == "small_affine":
            c.model.coupling = "affine"
        elif arg == "small_noattn":
            c.model.attention = False
    return c
