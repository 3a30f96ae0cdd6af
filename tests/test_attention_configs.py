"""The AttnFlow and ACF configs state the papers' settings (issue 18).

Every variant of these configs is also built (``jax.eval_shape`` of its model's init) by
tests/test_configs.py, which finds configs by glob; here: the settings the factories
receive, against the papers.
"""
import pytest

from tests.test_configs import factory_arguments, load


def _args(name, variant=""):
    return factory_arguments(load(name).get_config(variant))


@pytest.mark.parametrize("name, steps, iterations", [("attnflow_mnist", 2, 100_000),
                                                     ("attnflow_cifar10", 4, 90_000)])
def test_attnflow_configs_follow_the_supplement(name, steps, iterations):
    config = load(name).get_config("")
    a = _args(name)
    assert (a["backbone"], a["coupling"], a["levels"], a["steps_per_level"]) == (
        "mar_scf", "mixlogcdf", 3, steps)
    assert (a["attention"], a["position"]) == ("imap", 4)
    assert (config.batch_size, config.num_train_steps) == (32, iterations)
    assert (config.optim.name, config.optim.learning_rate) == ("adam", 8e-4)
    t = _args(name, "itrans")
    assert (t["attention"], t["heads"], t["patch_size"], t["position"]) == (
        "itrans", 5, "half", 4)
    assert t["matrix_form"] == "dominant"
    assert _args(name, "glow")["backbone"] == "glow"


TABLE1 = [  # (config, variant, base, attention, heads)
    ("acf_mnist", "", "resflow", "l2", 4),
    ("acf_mnist", "iresnet_l2", "iresnet", "l2", 4),
    ("acf_mnist", "resflow_lipnorm", "resflow", "lipnorm", 1),
    ("acf_mnist", "idensenet_l2", "idensenet", "l2", 4),
    ("acf_cifar10", "", "resflow", "lipnorm", 1),
    ("acf_cifar10", "resflow_l2", "resflow", "l2", 16),
    ("acf_cifar10", "iresnet_l2", "iresnet", "l2", 16),
    ("acf_cifar10", "idensenet_l2", "idensenet", "l2", 16),
    ("acf_imagenet32", "", "resflow", "l2", 16),
    ("acf_imagenet32", "idensenet_l2", "idensenet", "l2", 16),
    ("acf_imagenet64", "", "resflow", "l2", 16),
]


@pytest.mark.parametrize("name, variant, base, attention, heads", TABLE1)
def test_acf_configs_are_table1_rows(name, variant, base, attention, heads):
    a = _args(name, variant)
    assert (a["base"], a["attention"], a["heads"]) == (base, attention, heads)
    assert (a["placement"], a["output"], a["bound"]) == ("between", "normalised", "derived")
    assert a["blocks_per_level"] == 16
    base_config = {"resflow": "resflow_cifar10", "iresnet": "iresnet_cifar10",
                   "idensenet": "idensenet_cifar10"}[base]
    assert a["estimator"] == _args(base_config)["estimator"]


def test_acf_first_placement_variants_keep_the_earlier_layout():
    assert _args("acf_mnist", "first")["placement"] == "first"
    c = _args("acf_cifar10", "first")
    assert (c["placement"], c["attention"], c["heads"]) == ("first", "lipnorm", 3)
