"""Vector (tabular) data: sources, the MAF sets' loaders on synthetic files, bad files,
and the trainer on vectors (nats, early stopping, exact resume, density plot, launcher).

The MAF sets' loaders read synthetic arrays written to a temporary folder in the
published layout and format (``power/data.npy`` with 8 columns, ``hepmass/*.csv`` with
a header and a label column, ...); the trainer tests share one tiny MAF on ``two_moons``.
"""
import json
import os

import jax
import numpy as np
import pytest

from jaxflows import data as jd
from jaxflows import train as jt
from jaxflows.data import tabular

# --------------------------------------------------------------------------------------
# sources
# --------------------------------------------------------------------------------------


def test_toy_and_offline_sources_are_float_vectors():
    info = jd.get_info("two_moons")
    assert info.is_vector and info.image_shape == (2,) and info.num_bins is None
    src = jd.get_source("two_moons", "train[:100]")
    batch = src.get_batch(np.arange(5))
    assert batch["image"].dtype == np.float32 and batch["image"].shape == (5, 2)
    # a TFDS-style slice over two base splits keeps float32
    both = jd.get_source("two_moons", "validation[:3]+test[:3]")
    assert both.get_batch(np.arange(6))["image"].dtype == np.float32
    loader = jd.make_loader(src, global_batch_size=8, seed=0)
    assert next(loader)["image"].dtype == np.float32


def test_breast_cancer_is_standardised_with_training_statistics():
    info = jd.get_info("breast_cancer")
    assert info.image_shape == (24,) and info.num_classes == 2
    splits = tabular.vector_splits("breast_cancer")
    assert {k: len(v) for k, v in splits.items()} == dict(info.split_sizes)
    train = splits["train"].x
    np.testing.assert_allclose(train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(train.std(0), 1, atol=1e-4)
    # the dropped features were the ones with a value repeated more than 5 times
    for j in range(train.shape[1]):
        assert np.unique(train[:, j], return_counts=True)[1].max() <= 5
    assert not np.allclose(splits["test"].x.mean(0), 0, atol=1e-3)   # test not refit


def test_vector_dataset_refuses_padding():
    with pytest.raises(ValueError, match="pad"):
        jd.get_info("two_moons", pad=1)


# --------------------------------------------------------------------------------------
# the MAF sets, from synthetic files in the published layout
# --------------------------------------------------------------------------------------


def _write_power(folder, n=400, seed=0):
    os.makedirs(folder / "power", exist_ok=True)
    data = np.random.RandomState(seed).randn(n, 8)
    np.save(folder / "power" / "data.npy", data)
    return data


def test_power_follows_the_maf_rules(tmp_path):
    data = _write_power(tmp_path)
    train, val, test = tabular.load_power(str(tmp_path))
    # shuffle with RandomState(42), drop columns 3 and 1, noise, 10% test / 10% val
    rng = np.random.RandomState(42)
    ref = data.copy()
    rng.shuffle(ref)
    ref = np.delete(np.delete(ref, 3, axis=1), 1, axis=1)
    n = ref.shape[0]
    voltage = 0.01 * rng.rand(n, 1)     # drawn in the reference's order
    gap = 0.001 * rng.rand(n, 1)
    sub_metering = rng.rand(n, 3)
    ref = ref + np.hstack((gap, voltage, sub_metering, np.zeros((n, 1))))
    assert (len(train), len(val), len(test)) == (324, 36, 40)
    both = np.vstack((ref[:324], ref[324:360]))
    want_test = (ref[360:] - both.mean(0)) / both.std(0)
    np.testing.assert_allclose(test, want_test, rtol=1e-5, atol=1e-5)
    assert train.shape[1] == 6 and train.dtype == np.float32
    # and through get_source with the data folder
    src = jd.get_source("power", "validation", data_dir=str(tmp_path))
    np.testing.assert_array_equal(src.get_batch(np.arange(36))["image"], val)


def test_miniboone_and_hepmass(tmp_path):
    rs = np.random.RandomState(1)
    os.makedirs(tmp_path / "miniboone")
    np.save(tmp_path / "miniboone" / "data.npy", rs.randn(200, 43))
    train, val, test = tabular.load_miniboone(str(tmp_path))
    assert (len(train), len(val), len(test), train.shape[1]) == (162, 18, 20, 43)
    np.testing.assert_allclose(np.vstack((train, val)).mean(0), 0, atol=1e-5)

    os.makedirs(tmp_path / "hepmass")
    feats = rs.randn(300, 28)
    feats[:10, :7] = -9.0       # 7 features whose smallest value repeats > 5 times
    labels = np.r_[np.ones(250), np.zeros(50)][:, None]
    header = ",".join(["# label"] + [f"f{i}" for i in range(28)])
    np.savetxt(tmp_path / "hepmass" / "1000_train.csv", np.hstack((labels, feats)),
               delimiter=",", header=header, comments="")
    test_rows = np.hstack((np.ones((40, 1)), rs.randn(40, 28), np.full((40, 1), 1000.0)))
    np.savetxt(tmp_path / "hepmass" / "1000_test.csv", test_rows, delimiter=",",
               header=header + ",mass", comments="")
    train, val, test = tabular.load_hepmass(str(tmp_path))
    assert train.shape == (225, 21) and val.shape == (25, 21) and test.shape == (40, 21)
    assert jd.get_info("hepmass").image_shape == (21,)
    src = jd.get_source("hepmass", "test", data_dir=str(tmp_path))
    assert len(src) == 40


def test_gas_and_bsds300(tmp_path):
    pd = pytest.importorskip("pandas")
    h5py = pytest.importorskip("h5py")
    rs = np.random.RandomState(2)
    os.makedirs(tmp_path / "gas")
    cols = {"Time": np.arange(100.0), "Meth": rs.rand(100), "Eth": rs.rand(100)}
    base = rs.randn(100, 8)
    for i in range(16):   # 8 columns, each duplicated (correlation 1 > 0.98): 8 remain
        cols[f"S{i}"] = base[:, i % 8] + (0 if i < 8 else 1e-6 * rs.randn(100))
    pd.DataFrame(cols).to_pickle(tmp_path / "gas" / "ethylene_CO.pickle")
    train, val, test = tabular.load_gas(str(tmp_path))
    assert train.shape == (81, 8) and val.shape == (9, 8) and test.shape == (10, 8)
    os.makedirs(tmp_path / "BSDS300")
    with h5py.File(tmp_path / "BSDS300" / "BSDS300.hdf5", "w") as f:
        for k, n in (("train", 30), ("validation", 5), ("test", 7)):
            f[k] = rs.randn(n, 63)
    assert [len(x) for x in tabular.load_bsds300(str(tmp_path))] == [30, 5, 7]


def test_missing_nan_and_wrong_columns_are_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"zenodo.org/record/1161203.*data_dir"):
        jd.get_source("miniboone", "train", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="data_dir is required"):
        tabular.load_power(None)
    os.makedirs(tmp_path / "miniboone")
    bad = np.random.RandomState(0).randn(50, 43)
    bad[7, 12] = np.nan
    path = tmp_path / "miniboone" / "data.npy"
    np.save(path, bad)
    with pytest.raises(ValueError, match=rf"{path}: column 12 .*nan.* at row 7"):
        tabular.load_miniboone(str(tmp_path))
    np.save(path, np.zeros((50, 42)))
    with pytest.raises(ValueError, match=rf"{path}: expected 43 columns, found 42"):
        tabular.load_miniboone(str(tmp_path))
    os.makedirs(tmp_path / "hepmass")
    csv = tmp_path / "hepmass" / "1000_train.csv"
    csv.write_text("label,a,b\n1,0.5,\n1,0.1,0.2\n")
    (tmp_path / "hepmass" / "1000_test.csv").write_text("label,a,b,c\n1,0,0,0\n")
    with pytest.raises(ValueError, match=rf"{csv}: expected 29 columns, found 3"):
        tabular.load_hepmass(str(tmp_path))
    with pytest.raises(ValueError, match=r"rows x: column 1 holds a non-finite value"):
        tabular.VectorSource(np.array([[0.0, np.inf]]), name="rows x")


# --------------------------------------------------------------------------------------
# the trainer on vectors
# --------------------------------------------------------------------------------------


def tiny_config(**overrides):
    """A tiny MAF run on two moons, with ``{"section.key": value}`` overrides."""
    c = jt.set_fields(
        jt.default_config(),
        dataset=dict(name="two_moons", train_split="train[:2000]",
                     val_split="validation[:500]", test_split="test[:500]"),
        model=dict(name="maf", num_layers=2, hidden_features=(8, 8)),
        batch_size=32, eval_batch_size=250, init_batch_size=32, num_train_steps=8,
        optim=dict(learning_rate=3e-3, warmup_steps=0), ema_decay=0.9, log_every=2,
        eval_every=4, checkpoint_every=4, sample_temperatures=(1.0,), num_samples=50,
        progress_bar=False)
    return jt.set_fields(c, overrides)


class _CrashError(Exception):
    pass


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tab")
    a, b = str(root / "a"), str(root / "b")
    res_a = jt.train_and_evaluate(tiny_config(), a)

    def crash(step, state):
        if step == 6:
            raise _CrashError()
    with pytest.raises(_CrashError):
        jt.train_and_evaluate(tiny_config(), b, hooks=[crash])
    res_b = jt.train_and_evaluate(tiny_config(), b)
    return a, b, res_a, res_b


def test_vector_run_reports_nats_and_resumes_exactly(runs):
    a, b, res_a, res_b = runs
    assert "test_bpd" not in res_a and "val_bpd" not in res_a
    assert np.isfinite(res_a["test_nats_per_dim"])
    assert res_a["test_log_likelihood"] == pytest.approx(-2 * res_a["test_nats_per_dim"])
    for key in ("test_nats_per_dim", "val_nats_per_dim", "best_step"):
        assert res_a[key] == res_b[key]
    recs = [json.loads(line) for line in open(os.path.join(a, "metrics.jsonl"))]
    assert "train_nats_per_dim" in recs[0] and "train_bpd" not in recs[0]
    assert recs == [json.loads(line) for line in open(os.path.join(b, "metrics.jsonl"))]
    samples = np.load(res_a["samples"]["1"])
    assert samples.shape == (50, 2) and np.all(np.isfinite(samples))


def test_density_plot_and_its_mass(runs):
    a, _, res_a, _ = runs
    plot = res_a["density_plot"]
    assert os.path.exists(plot["path"]) and plot["path"].endswith("density.png")
    # the learned density integrates to about 1 over the square holding the data
    assert 0.9 < plot["mass"] <= 1.01


def test_evaluation_matches_a_direct_log_prob(runs):
    a, _, res_a, _ = runs
    run = jt.prepare_run(tiny_config(), a)
    state = jt.restore_for_eval(a, jt.abstract_state(run), "best")[0]
    x = run.test_src.get_batch(np.arange(len(run.test_src)))["image"]
    lp = run.flow.apply(state.variables(True), x)
    assert -float(np.mean(lp)) / 2 == pytest.approx(res_a["test_nats_per_dim"], rel=1e-5)


def test_early_stopping_with_patience(tmp_path, monkeypatch):
    """Validation figures that only get worse after step 2: stop 2 evaluations later."""
    from jaxflows.train import loop
    calls = []
    real = loop.evaluate_split

    def fake(run, state, source, split_id, cache=None):
        if split_id == loop.VAL_SPLIT_ID:
            step = int(jax.device_get(state.step))
            calls.append(step)
            return float(step)       # increasing: the best stays at the first evaluation
        return real(run, state, source, split_id, cache)
    monkeypatch.setattr(loop, "evaluate_split", fake)
    c = tiny_config(eval_every=2, checkpoint_every=2, num_train_steps=20,
                    early_stopping_patience=2)
    res = jt.train_and_evaluate(c, str(tmp_path))
    assert res["stopped_early"] and res["step"] == 6 and res["best_step"] == 2
    # rerunning the finished run does not train further
    res2 = jt.train_and_evaluate(c, str(tmp_path))
    assert res2["step"] == 6
    c.dataset.val_split = ""
    with pytest.raises(ValueError, match="early_stopping_patience.*validation split"):
        jt.prepare_run(c)


def test_model_kind_must_match_the_data():
    with pytest.raises(ValueError, match=r"config.model.name='glow' is a flow on images.*"
                                         r"gives vectors"):
        jt.prepare_run(tiny_config(**{"model.name": "glow"}))
    c = tiny_config()
    c.dataset.name = "digits"
    c.dataset.train_split, c.dataset.val_split, c.dataset.test_split = (
        "train[:100]", "", "test[:20]")
    with pytest.raises(ValueError, match=r"config.model.name='maf' is a flow on vectors"):
        jt.prepare_run(c)
    with pytest.raises(ValueError, match=r"config.model.dim cannot be set"):
        jt.prepare_run(tiny_config(**{"model.dim": 3}))


def test_launcher_trains_and_evaluates_a_toy_config(tmp_path, capsys):
    from experiments import evaluate as evaluate_launcher
    from experiments import train as train_launcher
    work = str(tmp_path / "run")
    flags = ["--config.model.num_layers=2", "--config.model.hidden_features=(8, 8)",
             "--config.num_train_steps=4", "--config.eval_every=4",
             "--config.checkpoint_every=4", "--config.log_every=2",
             "--config.dataset.train_split=train[:1000]",
             "--config.dataset.val_split=validation[:200]",
             "--config.dataset.test_split=test[:200]", "--config.eval_batch_size=200",
             "--config.num_samples=20", "--config.progress_bar=False"]
    code = train_launcher.main(["train.py", "--config=experiments/configs/maf_toy.py:small",
                                f"--workdir={work}"] + flags)
    assert code == 0
    out = capsys.readouterr().out
    assert "test log-likelihood:" in out and "bits/dim" not in out
    results = json.load(open(os.path.join(work, "results.json")))
    code = evaluate_launcher.main(["evaluate.py", f"--workdir={work}"])
    assert code == 0
    line = json.loads(capsys.readouterr().out.splitlines()[0])
    assert line["log_likelihood"] == pytest.approx(results["test_log_likelihood"], rel=1e-5)
