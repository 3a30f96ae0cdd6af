r"""Residual Flow on ``digits`` (8x8, 17 levels), and the shared CPU-minutes variant.

    python experiments/train.py --config=experiments/configs/resflow_digits.py:small --workdir=runs/resflow_small
    python experiments/train.py --config=experiments/configs/resflow_digits.py --workdir=runs/resflow_digits

:func:`apply_small` shrinks a residual-flow config (Residual Flows, i-ResNet,
i-DenseNet) to train on ``digits`` on a CPU in minutes; ``resflow_*.py``,
``iresnet_*.py`` and ``idensenet_*.py`` use it for their ``:small`` variants, and
``resflow_digits.py:small`` is the Residual Flows one (same as
``resflow_mnist.py:small``). The default variant is a somewhat larger digits model
(4 blocks per level, 64 channels, 2,000 steps). Config schema: ``glow_digits.py``.
"""
import ml_collections

from jaxflows.train import default_config


def apply_small(c, model_name: str):
    """Turns config ``c`` into the small digits variant of ``model_name``'s architecture."""
    c.dataset.name = "digits"
    c.dataset.train_split = "train[:90%]"   # 1,350 images
    c.dataset.val_split = "train[90%:]"     # 150 images, best-checkpoint selection
    c.dataset.test_split = "test"           # 297 images
    m = c.model
    m.levels = 2                            # 8x8 -> 4x4
    m.blocks_per_level = 2
    m.fc_blocks = 1
    m.alpha = 0.05
    m.init_power_iterations = 100
    if model_name == "idensenet":
        m.depth = 2
        m.growth = 32
        m.fc_growth = 16
        m.fc_first_features = 32
    else:
        m.hidden_channels = 32
        m.fc_hidden = 64
    c.batch_size = 64
    c.eval_batch_size = 300
    c.init_batch_size = 256
    c.num_train_steps = 1200
    c.optim.name = "adam"
    c.optim.learning_rate = 2e-3
    c.optim.b2 = 0.99
    c.optim.warmup_steps = 50
    c.optim.schedule = "cosine"
    c.optim.final_lr_fraction = 0.05
    c.optim.grad_clip_norm = 5.0
    c.ema_decay = 0.99
    c.log_every = 25
    c.eval_every = 200
    c.checkpoint_every = 400
    c.keep_checkpoints = 1
    c.sample_temperatures = (0.7, 1.0)
    c.num_samples = 36
    return c


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    c = default_config()
    c.model.name = "resflow"
    c.model.kernels = (3, 1, 3)
    c.model.activation = "lipswish"
    c.model.coeff = 0.98
    c.model.factor_out = False
    c.model.estimator = "roulette"
    c.model.n_exact_terms = 2
    c.model.distribution = "poisson"
    c.model.lam = 2.0
    c.model.neumann_grad = True
    apply_small(c, "resflow")
    if arg == "small":
        return c
    if arg:
        raise ValueError(f"resflow_digits: unknown config variant {arg!r}; use '' or 'small'.")
    c.model.blocks_per_level = 4
    c.model.hidden_channels = 64
    c.model.fc_blocks = 2
    c.model.fc_hidden = 128
    c.num_train_steps = 2000
    c.eval_every = 200
    c.checkpoint_every = 500
    return c
