"""Model factories: each ``factory(image_shape, *, num_bins=256, **arch_kwargs) -> Flow``.

Every factory takes dequantised pixel values in ``[0, num_bins)`` and includes the
preprocessing bijector, so ``Flow.log_prob`` is the density of the pixel values.
``MODELS`` maps a name (``config.model.name``) to its factory; a new factory is one
import line, one ``__all__`` entry and one ``MODELS`` entry here (the completeness
tests then build, round-trip and evaluate it at a tiny size).
"""
from jaxflows.models.acf import acf
from jaxflows.models.attnflow import attnflow
from jaxflows.models.conditional import cattnflow, class_conditional_glow, conditional_glow
from jaxflows.models.flowpp import FlowPP, flowpp
from jaxflows.models.glow import glow
from jaxflows.models.mar_scf import mar_scf
from jaxflows.models.multiscale import MultiScale, multiscale
from jaxflows.models.realnvp import realnvp
from jaxflows.models.resflow import idensenet, iresnet, resflow
from jaxflows.models.transformer_flows import jet, tarflow
from jaxflows.models.vae import VAE, vae
from jaxflows.models.vector import iaf, maf, naf, nsf, realnvp_vector

__all__ = ["MODELS", "get_model", "glow", "realnvp", "attnflow", "acf", "resflow", "iresnet",
           "idensenet", "MultiScale", "multiscale", "mar_scf", "flowpp", "FlowPP",
           "maf", "iaf", "naf", "nsf", "realnvp_vector",
           "conditional_glow", "class_conditional_glow", "cattnflow",
           "tarflow", "jet",
           "VAE", "vae"]   # a VAE is not a flow: not in MODELS

MODELS = {
    "glow": glow,
    "realnvp": realnvp,
    "attnflow": attnflow,
    "acf": acf,
    "resflow": resflow,
    "iresnet": iresnet,
    "idensenet": idensenet,
    "mar_scf": mar_scf,
    "flowpp": flowpp,
    # Flows on vectors: factory(dim, **arch_kwargs), event shape (dim,), no preprocessing.
    "maf": maf,
    "iaf": iaf,
    "naf": naf,
    "nsf": nsf,
    "realnvp_vector": realnvp_vector,
    # Conditional flows (p(x | context); Flow.context_shape declared): the context comes
    # from config.dataset.context ("label", "lowres:F", "mask:T", "segmentation"), its
    # shape from config.model.
    "conditional_glow": conditional_glow,
    "class_conditional_glow": class_conditional_glow,
    "cattnflow": cattnflow,
    # Transformer flows (TarFlow autoregressive blocks, Jet couplings).
    "tarflow": tarflow,
    "jet": jet,
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
