"""The shared CPU-minutes variant of the residual-flow configs: digits (8x8, 17 levels).

Not a config itself (no ``get_config``); ``resflow_*.py``, ``iresnet_*.py`` and
``idensenet_*.py`` call :func:`apply_small` for their ``:small`` variant.
"""


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
    c.num_train_steps = 600
    c.optim.name = "adam"
    c.optim.learning_rate = 2e-3
    c.optim.b2 = 0.99
    c.optim.warmup_steps = 50
    c.optim.schedule = "cosine"
    c.optim.final_lr_fraction = 0.05
    c.optim.grad_clip_norm = 5.0
    c.ema_decay = 0.99
    c.log_every = 25
    c.eval_every = 100
    c.checkpoint_every = 200
    c.keep_checkpoints = 1
    c.sample_temperatures = (0.7, 1.0)
    c.num_samples = 36
    return c
