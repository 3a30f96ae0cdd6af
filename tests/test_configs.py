"""Every experiment config, and every variant it accepts, builds its model.

Configs are found by glob (every ``experiments/configs/*.py`` that defines
``get_config``), so a new config is covered without editing this file. Each declares its
variants in ``VARIANTS`` (the convention of ``experiments/configs/common.py``); for each
one the model of ``config.model`` is built at the image shape of ``config.dataset``
(``jaxflows.data.get_info``: the published shape of a TFDS dataset that is not prepared
here, the padded one with ``dataset.pad``) and initialised abstractly (``jax.eval_shape``
of ``flow.init``: traced, nothing computed, so the full paper models cost seconds). An
unknown variant must be a ``ValueError``. A deliberately broken config goes through the
same check and fails (the test of the test). The papers' settings are checked on the
arguments the factories actually receive (their defaults with the config's overrides),
since configs state only what differs from the defaults.
"""
import glob
import importlib
import inspect
import os
import types

import jax
import jax.numpy as jnp
import pytest

from jaxflows import data as jdata
from jaxflows.bijectors.residual_settings import (
    EvalEstimator,
    FixedPointSolver,
    LogDetEstimator,
    SpectralNorm,
    as_settings,
)
from jaxflows.models import MODELS
from jaxflows.train import read_settings
from jaxflows.train.run import context_shape

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_DIR = os.path.join(ROOT, "experiments", "configs")
SETTINGS = {"estimator": LogDetEstimator, "eval_estimator": EvalEstimator,
            "solver": FixedPointSolver, "spectral_norm": SpectralNorm}


def find_configs(directory: str = CONFIG_DIR):
    """Module names of the ``*.py`` files of ``directory`` that define ``get_config``."""
    names = []
    for path in sorted(glob.glob(os.path.join(directory, "*.py"))):
        with open(path) as f:
            if "\ndef get_config(" in f.read():
                names.append(os.path.splitext(os.path.basename(path))[0])
    return names


def load(name: str) -> types.ModuleType:
    return importlib.import_module(f"experiments.configs.{name}")


def variants(module: types.ModuleType):
    """The module's ``VARIANTS`` (a non-empty tuple of strings, ``""`` first)."""
    declared = getattr(module, "VARIANTS", None)
    assert isinstance(declared, tuple) and declared and declared[0] == "" and all(
        isinstance(v, str) for v in declared), (
        f"{module.__name__}: declare the accepted variants as a module-level tuple "
        f"VARIANTS = ('', ...), the default '' first (see experiments/configs/common.py); "
        f"got {declared!r}")
    return declared


def model_kwargs(config) -> dict:
    """``config.model`` without ``name``: the factory's keyword arguments."""
    kwargs = config.model.to_dict()
    kwargs.pop("name")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}


def check_config(module: types.ModuleType, variant: str):
    """Builds the model of ``module.get_config(variant)`` for its dataset's images and
    initialises it abstractly; returns ``(config, variables)`` (shape structs).

    Raises whatever the config, the dataset lookup, the factory or the initialisation
    raises (unknown dataset, unknown or bad model argument, wrong image shape, ...).
    """
    config = module.get_config(variant)
    read_settings(config)       # the trainer's schema: unknown keys, types, values
    info = jdata.get_info(config.dataset.name, pad=config.dataset.get("pad", 0))
    shape = tuple(info.image_shape)
    # Variants that differ only in training settings build the same model: trace it once.
    key = (config.model.name, repr(sorted(model_kwargs(config).items())), config.dataset.name,
           shape,
           info.num_bins, config.dataset.get("context", ""))
    if key not in _BUILT:
        _BUILT[key] = _build(config, info, shape)
    return config, _BUILT[key]


_BUILT = {}


def _build(config, info, shape):
    """The abstract variables of ``config``'s model (``check_config``)."""
    if getattr(info, "is_vector", False):     # flows on vectors: factory(D, **kwargs)
        flow = MODELS[config.model.name](shape[0], **model_kwargs(config))
    else:
        flow = MODELS[config.model.name](shape, num_bins=info.num_bins, **model_kwargs(config))
    # A conditional model gets the context of config.dataset.context (shape and dtype).
    ctx = context_shape(config.dataset.get("context", ""), info)

    def init(key, x, c):
        kw = {} if c is None else {"context": c}
        return flow.init({"params": key, "dropout": key, "logdet": key}, x, **kw)

    x = jax.ShapeDtypeStruct((2,) + shape, jnp.float32)
    c = None if ctx is None else jax.ShapeDtypeStruct((2,) + ctx[0], ctx[1])
    variables = jax.eval_shape(init, jax.random.PRNGKey(0), x, c)
    assert jax.tree_util.tree_leaves(variables["params"]), "the model has no parameters"
    return variables


CONFIGS = find_configs()
CASES = [(name, v) for name in CONFIGS for v in variants(load(name))]


def test_configs_are_found():
    assert len(CONFIGS) >= 13 and "common" not in CONFIGS
    assert {"glow_digits", "resflow_cifar10", "acf_mnist"} <= set(CONFIGS)


def _attnflow_mnist_at_32x32(config, variables, attention):
    """The paper's AttnFlow on MNIST padded to 32x32: 3 levels of K=2 steps seeing 4, 8
    and 16 channels, with the variant's attention.
    """
    assert jdata.get_info(config.dataset.name, pad=config.dataset.pad).image_shape == (
        32, 32, 1)
    params = variables["params"]
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(params)]
    channels = {leaf.shape for p, leaf in jax.tree_util.tree_leaves_with_path(params)
                if "ActNorm" in jax.tree_util.keystr(p)
                and jax.tree_util.keystr(p).endswith("['log_scale']")}
    assert sorted(channels) == [(2, 4), (2, 8), (2, 16)]
    assert any(("IMap" if attention == "imap" else "ITrans") in p for p in paths)


# Extra structural checks of some variants, on the variables the build above made.
EXTRA = {("attnflow_mnist", ""): lambda c, v: _attnflow_mnist_at_32x32(c, v, "imap"),
         ("attnflow_mnist", "itrans"): lambda c, v: _attnflow_mnist_at_32x32(c, v, "itrans")}


@pytest.mark.parametrize("name, variant", CASES, ids=[f"{n}:{v or 'default'}" for n, v in CASES])
def test_config_variant_builds_its_model(name, variant):
    config, variables = check_config(load(name), variant)
    if (name, variant) in EXTRA:
        EXTRA[name, variant](config, variables)


@pytest.mark.parametrize("name", CONFIGS)
def test_unknown_variant_is_refused(name):
    with pytest.raises(ValueError, match="variant"):
        load(name).get_config("no_such_variant")


def test_no_config_names_an_absolute_path():
    for name in CONFIGS:
        config = load(name)
        for variant in variants(config):
            text = str(config.get_config(variant))
            assert "/work/" not in text and "npz:" not in text, (name, variant)


# --------------------------------------------------------------------------------------
# The test of the test: a broken config fails the same check.
# --------------------------------------------------------------------------------------
BROKEN = '''
from experiments.configs import common
from jaxflows.train import default_config

VARIANTS = ("", "small")


def get_config(arg=""):
    common.check_variant("broken", arg, VARIANTS)
    c = common.digits_splits(default_config())
    c.model.name = "resflow"
    c.model.levels = 2
    c.model.blocks_per_level = 1
    c.model.hidden_channels = 4
    if arg == "small":
        c.model.{key} = {value}
    return c
'''


def _module(source: str) -> types.ModuleType:
    module = types.ModuleType("broken_config")
    exec(compile(source, "broken_config.py", "exec"), module.__dict__)
    return module


@pytest.mark.parametrize("key, value, error, match", [
    ("hidden_chanels", "8", TypeError, "hidden_chanels"),           # not an argument
    ("levels", "5", ValueError, "divisible"),                         # 8x8 has 3 squeezes
    ("spectral_norm", "dict(coef=0.9)", ValueError, "unknown key 'coef'"),
    ("estimator", "dict(kind='russian')", ValueError, "kind"),
    ("coeff", "0.9", TypeError, "spectral_norm=dict"),                # moved keyword
])
def test_a_broken_config_fails_the_check(tmp_path, key, value, error, match):
    source = BROKEN.format(key=key, value=value)
    (tmp_path / "broken.py").write_text(source)
    assert find_configs(str(tmp_path)) == ["broken"]     # the glob finds a new file
    module = _module(source)
    check_config(module, "")                             # the default variant is fine
    with pytest.raises(error, match=match):
        check_config(module, "small")


def test_a_config_without_variants_fails_the_check():
    module = _module(BROKEN.replace('VARIANTS = ("", "small")', "").replace(
        'common.check_variant("broken", arg, VARIANTS)', "").format(key="levels", value="2"))
    with pytest.raises(AssertionError, match="VARIANTS"):
        variants(module)


# --------------------------------------------------------------------------------------
# The papers' settings, as the factories receive them
# --------------------------------------------------------------------------------------
def factory_arguments(config) -> dict:
    """Every argument of the config's model factory: its default, overridden by
    ``config.model`` (settings dicts merged into the factory's default objects); for
    ``acf``, the base factory's arguments too.
    """
    kwargs = model_kwargs(config)
    names = [config.model.name]
    if config.model.name == "acf":
        names.append(kwargs.get("base", "resflow"))
    args = {}
    for name in reversed(names):
        for key, param in inspect.signature(MODELS[name]).parameters.items():
            if param.default is not inspect.Parameter.empty:
                args[key] = param.default
    for key, value in kwargs.items():
        if key in SETTINGS:
            value = as_settings(SETTINGS[key], value, args[key], name=key, who="test")
        args[key] = value
    return args


def test_configs_follow_the_papers():
    def args(name, variant=""):
        return factory_arguments(load(name).get_config(variant))

    glow = args("glow_cifar10")      # Kingma & Dhariwal 2018
    assert (glow["levels"], glow["steps_per_level"], glow["hidden_channels"]) == (3, 32, 512)
    assert (glow["coupling"], glow["lu"], glow["learn_split_prior"]) == ("affine", True, True)
    realnvp = args("realnvp_cifar10")  # Dinh et al. 2017
    assert (realnvp["levels"], realnvp["num_blocks"], realnvp["hidden_channels"]) == (2, 8, 64)
    attn = args("attnflow_mnist")      # Sukthanker et al. 2022
    assert (attn["levels"], attn["steps_per_level"], attn["attention"]) == (3, 2, "imap")
    assert args("attnflow_cifar10")["steps_per_level"] == 4
    res = args("resflow_cifar10")      # Chen et al. 2019
    assert (res["levels"], res["blocks_per_level"], res["hidden_channels"]) == (3, 16, 512)
    assert res["estimator"] == LogDetEstimator(kind="roulette", n_exact_terms=2,
                                               distribution="poisson", lam=2.0, n_samples=1,
                                               neumann_grad=True)
    assert res["eval_estimator"] == EvalEstimator(kind="eval", n_terms=20, n_samples=8)
    assert res["spectral_norm"].coeff == 0.98 and res["fc_blocks"] == 4
    assert args("resflow_mnist")["alpha"] == 1e-6
    ires = args("iresnet_cifar10")     # Behrmann et al. 2019
    assert ires["estimator"] == LogDetEstimator(kind="series", n_terms=5, n_samples=1)
    assert ires["spectral_norm"] == SpectralNorm(coeff=0.9, n_iterations=5)
    assert (ires["activation"], ires["factor_out"], ires["squeeze_first"]) == ("elu", True, True)
    small = args("iresnet_cifar10", "small")
    assert small["spectral_norm"] == SpectralNorm(coeff=0.9, n_iterations=2, init_iterations=100)
    dense = args("idensenet_cifar10")  # Perugachi-Diaz et al. 2021
    assert (dense["depth"], dense["growth"], dense["activation"]) == (3, 172, "clipswish")
    acf = args("acf_cifar10")          # Mukherjee et al., arXiv:2109.12135
    assert (acf["base"], acf["attention"], acf["heads"]) == ("resflow", "lipnorm", 1)
    assert acf["placement"] == "between"
    assert acf["estimator"] == res["estimator"] and acf["levels"] == 3
    mnist = load("glow_mnist").get_config("small")
    assert mnist.dataset.name == "mnist_8k"
    assert (mnist.dataset.train_split, mnist.dataset.val_split) == ("train[:90%]", "train[90%:]")


def test_set_fields_sets_sections_and_refuses_typos():
    from jaxflows.train import default_config, set_fields
    c = set_fields(default_config(), {"optim.b1": 0.5, "model.levels": 2}, batch_size=3,
                   optim=dict(learning_rate=2e-3), model=dict(estimator=dict(kind="series")))
    assert (c.optim.b1, c.optim.learning_rate, c.batch_size) == (0.5, 2e-3, 3)
    assert (c.model.levels, c.model.estimator.kind) == (2, "series")   # model: free keys
    assert c.optim.b2 == default_config().optim.b2                      # others untouched
    with pytest.raises(ValueError, match="unknown config key 'batchsize'"):
        set_fields(c, batchsize=1)
    with pytest.raises(ValueError, match="unknown config key 'optim.lr'"):
        set_fields(c, optim=dict(lr=1.0))
    with pytest.raises(ValueError, match="unknown config key 'optim.lr'"):
        set_fields(c, {"optim.lr": 1.0})
    with pytest.raises(ValueError, match="'seed' is a field, not a section"):
        set_fields(c, seed=dict(a=1))
