"""Completeness of the model registry: every entry of ``jaxflows.models.MODELS`` has a tiny
configuration, so every model is built, round-tripped in float32 and has its density
checked in float64 by ``tests/test_model_density.py``.

``TINY`` holds the tiny architecture of each model; a factory added to ``MODELS`` without
an entry here fails :func:`test_every_model_has_a_tiny_configuration`, so no model joins the
registry untested.
"""
import jax
import numpy as np
import pytest

from jaxflows import Flow
from jaxflows.bijectors.conditional import FixedContext
from jaxflows.models import MODELS

SHAPE = (8, 8, 1)
NUM_BINS = 17

TINY = {
    "glow": dict(levels=2, steps_per_level=1, hidden_channels=4),
    "realnvp": dict(levels=2, hidden_channels=4, num_blocks=1),
    "attnflow": dict(levels=2, steps_per_level=1, hidden_channels=4),
    "resflow": dict(levels=2, blocks_per_level=1, hidden_channels=4, fc_blocks=1, fc_hidden=4),
    "iresnet": dict(levels=2, blocks_per_level=1, hidden_channels=4),
    "idensenet": dict(levels=2, blocks_per_level=1, growth=4, depth=1, fc_blocks=1,
                      fc_growth=4, fc_first_features=4),
    "acf": dict(levels=2, blocks_per_level=1, hidden_channels=4, fc_blocks=0),
    "mar_scf": dict(levels=2, steps_per_level=1, hidden_channels=4, lstm_features=3,
                    lstm_layers=1, kernel_sizes=3, dilations=1, embed_channels=2),
    "maf": dict(num_layers=2, hidden_features=(8,)),
    "iaf": dict(num_layers=2, hidden_features=(8,)),
    "naf": dict(num_layers=2, hidden_features=(8,), sigmoid_units=3),
    "nsf": dict(num_layers=2, hidden_features=8, num_blocks=1, bins=4),
    "realnvp_vector": dict(num_layers=2, hidden_features=8, num_blocks=1),
    "flowpp": dict(components=2, hidden_channels=4, num_blocks=1, heads=2,
                   layout="checkerboard,squeeze,channel", dequantization="uniform"),
    "conditional_glow": dict(context_shape=(3,), levels=2, steps_per_level=1,
                             hidden_channels=4),
    "class_conditional_glow": dict(num_classes=3, levels=2, steps_per_level=1,
                                   hidden_channels=4, embedding_features=2),
    "cattnflow": dict(lr_shape=(2, 2, 1), levels=2, steps_per_level=1, hidden_channels=4,
                      rrdb_features=2, rrdb_growth=2, rrdb_blocks=1, stacked_blocks=(0,)),
    "tarflow": dict(patch_size=2, channels=8, blocks=2, layers_per_block=1, heads=2),
    "jet": dict(patch_size=2, width=8, couplings=2, block_depth=1, heads=2),
}

# Conditional models: one context row, bound with FixedContext (broadcast to every
# example), so every test here runs them as the unconditional flow p(x | c0).
CONTEXTS = {
    "conditional_glow": np.array([[0.5, -1.0, 2.0]], np.float32),
    "class_conditional_glow": np.array([2], np.int32),
    "cattnflow": np.full((1, 2, 2, 1), 6.0, np.float32),
}


# Models on vectors (event shape ``(dim,)``) take ``dim`` first and no ``num_bins``; their
# tiny dimension is here (every other model is built on images of shape ``SHAPE``).
VECTOR_DIMS = {"maf": 3, "iaf": 3, "naf": 3, "nsf": 3, "realnvp_vector": 3}


def build_tiny(name):
    """``(flow, sample_input)``: the tiny model ``name`` and ``sample_input(key, n)``, a
    batch of ``n`` valid inputs (pixel values in ``[0, NUM_BINS)`` or standard normal
    vectors). Shared by every test that runs all of ``MODELS``.
    """
    if name in VECTOR_DIMS:
        dim = VECTOR_DIMS[name]
        flow = MODELS[name](dim, **TINY[name])
        return flow, lambda key, n: jax.random.normal(key, (n, dim))
    flow = MODELS[name](SHAPE, num_bins=NUM_BINS, **TINY[name])
    if name in CONTEXTS:
        flow = Flow(bijector=FixedContext(flow.bijector, CONTEXTS[name]), event_shape=SHAPE)
    return flow, lambda key, n: jax.random.uniform(key, (n,) + SHAPE, maxval=NUM_BINS)


def missing_tiny(models, tiny):
    """Names in ``models`` with no tiny configuration."""
    return sorted(set(models) - set(tiny))


def test_every_model_has_a_tiny_configuration():
    assert missing_tiny(MODELS, TINY) == [], "add a TINY entry for every MODELS factory"
    assert set(TINY) <= set(MODELS), sorted(set(TINY) - set(MODELS))


def test_the_completeness_check_fails_on_a_new_model():
    models = dict(MODELS, new_flow=lambda *a, **k: None)
    assert missing_tiny(models, TINY) == ["new_flow"]
    assert missing_tiny(MODELS, {k: v for k, v in TINY.items() if k != "glow"}) == ["glow"]


@pytest.mark.parametrize("name", sorted(set(MODELS) - set(VECTOR_DIMS)))
def test_old_num_levels_argument_names_its_new_name(name):
    with pytest.raises(TypeError, match=r"`num_levels` was renamed `num_bins`"):
        MODELS[name](SHAPE, num_levels=NUM_BINS, **TINY[name])
