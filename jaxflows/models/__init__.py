"""Model factories: each ``factory(image_shape, *, num_levels=256, **arch_kwargs) -> Flow``.

Every factory takes dequantised pixel values in ``[0, num_levels)`` and includes the
preprocessing bijector, so ``Flow.log_prob`` is the density of the pixel values.
``MODELS`` maps a name (``config.model.name``) to its factory; other helpers register
theirs here (one import line, ``__all__`` and a ``MODELS`` entry).
"""
from jaxflows.models.glow import glow
from jaxflows.models.multiscale import MultiScale, multiscale
from jaxflows.models.realnvp import realnvp

__all__ = ["MODELS", "get_model", "glow", "realnvp", "MultiScale", "multiscale"]

MODELS = {
    "glow": glow,
    "realnvp": realnvp,
}


def get_model(name: str, **kwargs):
    """Builds the model registered as ``name`` in :data:`MODELS` with ``kwargs``.

    Raises:
      ValueError: ``name`` is not a known model (the message lists the known ones).
    """
    if name not in MODELS:
        raise ValueError(
            f"get_model: unknown model name {name!r}; known models: {sorted(MODELS)}.")
    return MODELS[name](**kwargs)

from jaxflows.models.attnflow import attnflow  # noqa: E402  (attention helper)
__all__ += ["attnflow"]
MODELS["attnflow"] = attnflow
from jaxflows.models.acf import acf  # noqa: E402  (attention helper)
__all__ += ["acf"]
MODELS["acf"] = acf
from jaxflows.models.resflow import idensenet, iresnet, resflow  # noqa: E402  (residual-blocks)
__all__ += ["resflow", "iresnet", "idensenet"]
MODELS.update(resflow=resflow, iresnet=iresnet, idensenet=idensenet)
