"""experiments/ablations_mnist.py (issue 18, item 6): the grid's configs, the attention-use
trace, the seed table, and the refusals of its command line.
"""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import ablations_mnist as am
from experiments.configs import attnflow_mnist


def test_every_run_of_the_grid_states_what_its_table_says():
    """Each run differs from its table's baseline by the ablated setting only."""
    base = dict(am.make_config("mar_none", 0).model)
    assert base["name"] == "mar_scf" and "attention" not in base
    for name, (group, _, _) in am.RUNS.items():
        c = am.make_config(name, 3, steps=7)
        assert c.seed == 3 and c.num_train_steps == 7 and c.eval_every == 7
        assert c.dataset.name == "mnist_8k" and c.batch_size == 32
        m = dict(c.model)
        if group == "acf":
            assert m["name"] == "acf" and m["heads"] == 4
            kind, _, placement = name[len("acf_"):].partition("_")
            assert m["attention"] == kind
            if kind != "none":
                assert m["placement"] == placement and m["gamma_init"] == 1.0
            continue
        backbone, attention, *rest = name.split("_")
        if attention == "none":
            assert m["name"] == ("mar_scf" if backbone == "mar" else "glow")
            assert "attention" not in m
        else:
            assert m["name"] == "attnflow" and m["attention"] == attention
            assert m["backbone"] == ("mar_scf" if backbone == "mar" else "glow")
            assert m["position"] == int(rest[-1][1:])
            if attention == "itrans":
                assert m["heads"] == int(rest[0][1:]) and m["patch_size"] == "half"
        if backbone == "glow":
            assert not set(am.MAR_ONLY_KEYS) & set(m)
        shared = {k: v for k, v in m.items() if k in base and k != "name"}
        assert shared == {k: base[k] for k in shared}, name
    assert {n for _, names in am.TABLES for n in names} == set(am.RUNS)
    with pytest.raises(ValueError, match="unknown run"):
        am.make_config("mar_nothing", 0)


def test_grid_models_build():
    """The grid's distinct model families build at their MNIST shapes (no training)."""
    from jaxflows.train.run import prepare_run
    for name in ("glow_itrans_h5_p4", "mar_itrans_h7_p4", "acf_lipnorm_first"):
        run = prepare_run(am.make_config(name, 0, steps=2), None, check_workdir=False)
        x = jnp.zeros((1,) + tuple(run.info.image_shape), jnp.float32)
        shapes = jax.eval_shape(run.flow.init, jax.random.PRNGKey(0), x)
        assert shapes["params"], name


@pytest.fixture(scope="module")
def imap_trace(tmp_path_factory):
    """The attention trace of a tiny iMap AttnFlow on digits (Glow backbone)."""
    c = attnflow_mnist.get_config("small")
    with c.unlocked():
        c.model.attention = "imap"
        c.model.hidden_channels = 4
        c.num_train_steps = 10
    path = str(tmp_path_factory.mktemp("trace") / "attention_trace.jsonl")
    trace = am.AttentionTrace(c, path, every=5, num_images=16)
    from jaxflows.train.run import prepare_run
    run = prepare_run(c, None, check_workdir=False)
    x = jnp.full((2,) + tuple(run.info.image_shape), 8.0)
    variables = jax.jit(run.flow.init)(jax.random.PRNGKey(1), x)
    return trace, variables


class _State:
    def __init__(self, variables):
        self.params = variables["params"]
        self.rest = {k: v for k, v in variables.items() if k != "params"}

    def variables(self, use_ema=False):
        return {"params": self.params, **self.rest}


def test_trace_spread_is_zero_exactly_when_the_attention_ignores_the_image(imap_trace):
    trace, variables = imap_trace
    rec = trace.record(5, _State(variables))
    assert rec["captured"] == 4                 # 2 levels x 2 steps, one iMap each
    assert rec["logdet_std_bpd"] > 1e-4 and np.isfinite(rec["logdet_mean_bpd"])

    params = jax.tree_util.tree_map_with_path(
        lambda p, v: jnp.zeros_like(v) if ("imap" in jax.tree_util.keystr(p).lower()
                                           and jax.tree_util.keystr(p).endswith("['kernel']"))
        else v, variables["params"])
    zeroed = trace.record(10, _State({**variables, "params": params}))
    assert zeroed["logdet_std_bpd"] < 1e-6 and zeroed["captured"] == 4
    steps = [r["step"] for r in am.read_trace(trace.path)]
    assert steps == [5, 10]
    # the hook records at step 1, every `every` steps and at the last step only
    calls = []
    trace.record = lambda step, state: calls.append(step)
    for s in range(1, 11):
        trace(s, None)
    assert calls == [1, 5, 10]


def _fake_run(workdir, name, seed, bpd, trace=None):
    d = am.run_dir(workdir, name, seed)
    os.makedirs(d)
    with open(os.path.join(d, "results.json"), "w") as f:
        json.dump({"test_bpd": bpd, "val_bpd": bpd + 0.01}, f)
    with open(os.path.join(d, "ablation.json"), "w") as f:
        json.dump({"seconds": 100.0}, f)
    if trace:
        with open(os.path.join(d, "attention_trace.jsonl"), "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in trace)


def test_table_reports_mean_half_range_and_each_seed(tmp_path):
    work, out = str(tmp_path / "runs"), str(tmp_path / "table.md")
    _fake_run(work, "acf_none", 0, 1.50)
    _fake_run(work, "acf_none", 1, 1.70)
    _fake_run(work, "acf_l2_between", 0, 1.40, trace=[
        {"step": 1, "count": 4, "max_abs_gamma": 1.0, "mean_abs_gamma": 1.0},
        {"step": 400, "count": 4, "max_abs_gamma": 0.9, "mean_abs_gamma": 0.75}])
    _fake_run(work, "mar_imap_p4", 0, 2.5, trace=[
        {"step": 1, "logdet_mean_bpd": -0.5, "logdet_std_bpd": 0.01, "captured": 4},
        {"step": 400, "logdet_mean_bpd": -0.25, "logdet_std_bpd": 0.02, "captured": 4}])
    assert not am.write_table(out, work, [0, 1], "cmd", 400)
    text = open(out).read()
    assert "| Residual Flow, no attention | 1.600 ± 0.100 | 1.500, 1.700 |" in text
    assert "| ACF L2, between the convolutions | 1.400 (1 seed) | 1.400 | 1.00 -> 0.75 |" in text
    assert ("| mAR-SCF + iMap, pos-4 | 2.500 (1 seed) | 2.500 | 0.0100 -> 0.0200 (mean -0.500 "
            "-> -0.250) | 100 |") in text
    assert "Partial table" in text and "| ACF LipNorm, first in the branch | not run |" in text
    am.plot_traces(str(tmp_path / "use.png"), work, [0, 1])
    assert os.path.getsize(tmp_path / "use.png") > 1000


@pytest.mark.parametrize("argv, match", [
    (["--seeds=0,x"], "--seeds"),
    (["--seeds=,"], "--seeds"),
    (["--seeds=1,1"], "--seeds"),
    (["--only=mar_none,nope"], "unknown run"),
    (["--shard=2/2"], "--shard"),
    (["--steps=0"], "--steps"),
])
def test_command_line_refusals(argv, match, capsys):
    with pytest.raises(SystemExit) as e:
        am.main(argv + ["--table_only"])
    assert e.value.code == 2
    assert match in capsys.readouterr().err
