r"""AttnFlow on MNIST (Sukthanker et al., CVPR 2022, Sec. 4.1); small variant on digits.

    python experiments/train.py --config=experiments/configs/attnflow_mnist.py \
        --workdir=runs/attnflow_mnist
    python experiments/train.py --config=experiments/configs/attnflow_mnist.py:small \
        --workdir=runs/attnflow_mnist_small

The paper's MNIST model is a Glow backbone with L=3 levels and K=2 steps per level,
invertible attention in every step, trained with Adam at learning rate 8e-4. MNIST
images are 28x28 and 28 is not divisible by 2^3, so without resizing the input (the
data pipeline serves the original 28x28 digits) three squeezes are impossible: this
config uses L=2 (28 = 7 x 2^2), K=2. iTrans needs an even size at every level (7x7
at level 2 is not), so the full config uses iMap; iTrans runs on the digits variant.
Full config: TFDS ``mnist`` (prepare it once: ``tfds build mnist
--file_format=array_record``). See glow_digits.py for the config schema.

The ``small`` variant trains on the offline ``digits`` dataset (8x8, 17 levels) with
the same protocol as ``glow_digits.py:small`` (so the two are comparable): 2 levels,
K=2, 32 hidden channels, logit preprocessing, dropout 0.2, 300 steps.
"""
import ml_collections

from jaxflows.train import default_config


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = default_config()
    c.seed = 0
    c.dataset.name = "mnist"
    c.dataset.train_split = "train[:55000]"
    c.dataset.val_split = "train[55000:]"
    c.dataset.test_split = "test"

    c.model.name = "attnflow"
    c.model.attention = "imap"
    c.model.position = 1
    c.model.heads = 1
    c.model.levels = 2            # the paper's L=3 needs 32x32 inputs (see the docstring)
    c.model.steps_per_level = 2
    c.model.hidden_channels = 512
    c.model.coupling = "affine"
    c.model.preprocessing = "shift"
    c.model.dropout = 0.0

    c.batch_size = 64
    c.eval_batch_size = 500
    c.init_batch_size = 512
    c.num_train_steps = 100_000
    c.optim.name = "adam"
    c.optim.learning_rate = 8e-4
    c.optim.warmup_steps = 1000
    c.ema_decay = 0.999
    c.log_every = 100
    c.eval_every = 5000
    c.checkpoint_every = 5000

    if arg == "small":
        digits_small(c)
    elif arg:
        raise ValueError(f"attnflow_mnist: unknown config variant {arg!r}; use '' or 'small'.")
    return c


def digits_small(c: ml_collections.ConfigDict) -> None:
    """The CPU-minutes digits variant (shared by attnflow_cifar10.py:small)."""
    c.dataset.name = "digits"
    c.dataset.train_split = "train[:90%]"   # 1,350 images
    c.dataset.val_split = "train[90%:]"     # 150 images, best-checkpoint selection
    c.dataset.test_split = "test"           # 297 images
    c.model.attention = "itrans"
    c.model.position = 1
    c.model.heads = 2
    c.model.levels = 2
    c.model.steps_per_level = 2
    c.model.hidden_channels = 32
    c.model.preprocessing = "logit"
    c.model.alpha = 0.05
    c.model.dropout = 0.2
    c.batch_size = 64
    c.eval_batch_size = 300
    c.init_batch_size = 512
    c.num_train_steps = 300
    c.optim.name = "adam"
    c.optim.learning_rate = 8e-4
    c.optim.warmup_steps = 100
    c.optim.schedule = "cosine"
    c.optim.final_lr_fraction = 0.05
    c.ema_decay = 0.995
    c.log_every = 50
    c.eval_every = 100
    c.checkpoint_every = 100
    c.keep_checkpoints = 2
    c.num_samples = 64
