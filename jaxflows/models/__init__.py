"""Model factories: each ``factory(image_shape, *, num_bins=256, **arch_kwargs) -> Flow``.

Every factory takes dequantised pixel values in ``[0, num_bins)`` and includes the
preprocessing bijector, so ``Flow.log_prob`` is the density of the pixel values.
``MODELS`` maps a name (``config.model.name``) to its factory; a new factory is one
import line, one ``__all__`` entry and one ``MODELS`` entry here (the completeness
tests then build, round-trip and evaluate it at a tiny size).
"""
from jaxflows.models.acf import acf
from jaxflows.models.attnflow import attnflow
from jaxflows.models.glow import glow
from jaxflows.models.mar_scf import mar_scf
from jaxflows.models.multiscale import MultiScale, multiscale
from jaxflows.models.realnvp import realnvp
from jaxflows.models.resflow import idensenet, iresnet, resflow

__all__ = ["MODELS", "get_model", "glow", "realnvp", "attnflow", "acf", "resflow", "iresnet",
           "idensenet", "MultiScale", "multiscale", "mar_scf"]

MODELS = {
    "glow": glow,
    "realnvp": realnvp,
    "attnflow": attnflow,
    "acf": acf,
    "resflow": resflow,
    "iresnet": iresnet,
    "idensenet": idensenet,
    "mar_scf": mar_scf,
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
