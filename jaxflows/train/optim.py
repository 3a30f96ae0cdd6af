"""The optax optimiser of the trainer: warm-up, clipping, Adam/Adamax, skip non-finite steps."""
from __future__ import annotations

import optax

__all__ = ["make_schedule", "make_optimizer"]


def make_schedule(optim, num_train_steps: int) -> optax.Schedule:
    """Learning rate ``eta(t)``: linear warm-up, then constant or cosine decay.

    Linear warm-up ``eta * t / W`` for ``t < W``, then constant ``eta`` or a cosine
    decay from ``eta`` to ``final_lr_fraction * eta`` at ``num_train_steps``
    (Loshchilov & Hutter, 2017, eq. 5). ``optim`` is an
    :class:`~jaxflows.train.settings.OptimSettings` or ``config.optim``.
    """
    lr = float(optim.learning_rate)
    warmup = int(optim.warmup_steps)
    if warmup < 0:
        raise ValueError(f"config.optim.warmup_steps must be >= 0, got {warmup}.")
    if optim.schedule == "cosine":
        decay_steps = max(int(num_train_steps), warmup + 1)
        return optax.warmup_cosine_decay_schedule(
            init_value=0.0, peak_value=lr, warmup_steps=warmup, decay_steps=decay_steps,
            end_value=lr * float(optim.final_lr_fraction))
    if warmup == 0:
        return optax.constant_schedule(lr)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup])


def make_optimizer(optim, num_train_steps: int) -> optax.GradientTransformation:
    """``apply_if_finite(chain(clip_by_global_norm, adam|adamax|adamw))``.

    * Global-norm clipping: ``g <- g * min(1, c / ||g||_2)`` over all parameters.
    * Adam (Kingma & Ba, 2015, Alg. 1) or Adamax (ibid., Alg. 2, the infinity-norm
      variant used by Glow for CIFAR-10), or AdamW (decoupled weight decay).
    * ``optax.apply_if_finite``: when any update is NaN or +-inf the parameters and
      the inner optimiser state are left unchanged and the step is counted as
      skipped; ``max_consecutive_nonfinite`` bounds how many in a row are tolerated
      (the training loop aborts with an error past it, rather than letting
      optax apply a non-finite update).
    """
    schedule = make_schedule(optim, num_train_steps)
    if optim.name == "adam":
        inner = optax.adam(schedule, b1=optim.b1, b2=optim.b2, eps=optim.eps)
    elif optim.name == "adamax":
        inner = optax.adamax(schedule, b1=optim.b1, b2=optim.b2, eps=optim.eps)
    elif optim.name == "adamw":
        inner = optax.adamw(schedule, b1=optim.b1, b2=optim.b2, eps=optim.eps,
                            weight_decay=optim.weight_decay)
    else:
        raise ValueError(f"config.optim.name must be 'adam', 'adamax' or 'adamw', "
                         f"got {optim.name!r}.")
    parts = []
    if optim.grad_clip_norm and optim.grad_clip_norm > 0:
        parts.append(optax.clip_by_global_norm(float(optim.grad_clip_norm)))
    parts.append(inner)
    # The loop stops the run after max_consecutive_nonfinite skipped steps; optax's own
    # limit is set beyond it so that it never lets a non-finite update through.
    limit = int(optim.max_consecutive_nonfinite) + 1
    return optax.apply_if_finite(optax.chain(*parts), max_consecutive_errors=limit)
