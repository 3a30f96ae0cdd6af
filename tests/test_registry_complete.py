"""Completeness of the generic bijector registry (tests/registry/).

Every public :class:`~jaxflows.bijectors.Bijector` subclass of ``jaxflows.bijectors`` and
``jaxflows.models`` must be used by at least one registry case, so that it passes
:func:`jaxflows.testing.check_bijector`. Which classes a case uses is observed, not
declared: the case's module is initialised abstractly (``jax.eval_shape``) under a Flax
method interceptor that records the class of every module called, however deeply nested.
"""
import importlib
import inspect
import pkgutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

import jaxflows.bijectors
import jaxflows.models
from jaxflows.bijectors.base import Bijector
from tests.registry import all_cases

CASES = all_cases()


def public_bijector_classes():
    """Public ``Bijector`` subclasses defined in ``jaxflows.bijectors.*`` /
    ``jaxflows.models.*``.
    """
    found = {}
    for package in (jaxflows.bijectors, jaxflows.models):
        for info in pkgutil.iter_modules(package.__path__):
            module = importlib.import_module(f"{package.__name__}.{info.name}")
            for name, obj in vars(module).items():
                if (inspect.isclass(obj) and issubclass(obj, Bijector) and obj is not Bijector
                        and obj.__module__ == module.__name__ and not name.startswith("_")):
                    found[f"{obj.__module__}.{name}"] = obj
    return found


def classes_used(case):
    """The module classes called while ``case``'s bijector is initialised (abstractly)."""
    seen = set()

    def record(next_fun, args, kwargs, context):
        seen.add(type(context.module))
        return next_fun(*args, **kwargs)

    module = case.make()
    x = jnp.zeros(case.input_shape, jnp.float32) + 0.5
    if case.input_fn is not None:
        x = case.input_fn(jax.random.PRNGKey(0), case.input_shape)
    ctx = None if case.context_shape is None else jnp.zeros(case.context_shape)
    rngs = {name: jax.random.PRNGKey(1) for name in ("params", *case.rngs)}
    with nn.intercept_methods(record):
        jax.eval_shape(lambda: module.init(rngs, x, context=ctx, **case.init_kwargs))
    return seen


def uncovered(classes, cases):
    """Names of the ``classes`` used by none of ``cases``."""
    used = set()
    for case in cases:
        used |= classes_used(case)
    return sorted(name for name, cls in classes.items() if cls not in used)


@pytest.fixture(scope="module")
def used_classes():
    return {case.name: classes_used(case) for case in CASES}


def test_every_public_bijector_is_in_the_registry(used_classes):
    classes = public_bijector_classes()
    assert "jaxflows.bijectors.base.Identity" in classes and len(classes) >= 15, sorted(classes)
    used = set().union(*used_classes.values())
    missing = sorted(name for name, cls in classes.items() if cls not in used)
    assert not missing, (f"public bijectors with no case in tests/registry/: {missing}; add a "
                         "BijectorCase for each")


def test_completeness_check_fails_when_a_case_is_removed(used_classes):
    """The check above is not vacuous: dropping the cases that use a class reports it."""
    classes = public_bijector_classes()
    for target in ("jaxflows.bijectors.base.Identity", "jaxflows.bijectors.reshape.FlattenEvent"):
        cls = classes[target]
        kept = [c for c in CASES if cls not in used_classes[c.name]]
        assert len(kept) < len(CASES)
        used = set().union(*(used_classes[c.name] for c in kept))
        assert cls not in used
        assert target in sorted(n for n, k in classes.items() if k not in used)
    # and the helper agrees on a small explicit example
    identity_cases = [c for c in CASES if c.name == "identity_vector"]
    identity = {"Identity": classes["jaxflows.bijectors.base.Identity"]}
    assert uncovered(identity, identity_cases) == []
    assert uncovered(identity, []) == ["Identity"]
