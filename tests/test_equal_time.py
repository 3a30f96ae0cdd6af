"""experiments/equal_time.py: the schedule fitted to the budget, the models' configs, the table.

The training is the trainer's (tested elsewhere); here the parts of the driver that decide
what is trained and what is reported: every model's config validates (its flow is built
abstractly, TarFlow unconditional), the step count fills the budget, and the table is read
from the records.
"""
import json

import pytest

from experiments import equal_time
from jaxflows import train as jt


def test_schedule_fills_the_budget():
    config = equal_time.base_config("glow")
    config.optim.warmup_steps = 150
    config.log_every = 50
    assert equal_time.fit_schedule(config, 100.0, 0.5) == 200
    assert (config.num_train_steps, config.eval_every, config.checkpoint_every) == (200, 50, 50)
    assert config.optim.warmup_steps == 20          # capped at a tenth of the steps
    assert config.log_every == 50
    # a budget below EVALS steps still trains EVALS steps, evaluating after each
    assert equal_time.fit_schedule(config, 1.0, 0.5) == equal_time.EVALS
    assert config.eval_every == 1 and config.log_every == 1


@pytest.mark.parametrize("name", sorted(equal_time.MODELS))
def test_model_configs_validate(name):
    config = equal_time.base_config(name)
    assert config.dataset.name == "mnist_8k"
    jt.validate_config(config, num_devices=1)
    if name == "tarflow":       # unconditional, no noise: -log2 p(x) / D like the others
        assert config.dataset.context == "" and config.model.num_classes is None
        assert config.model.noise_std == 0.0


def test_outputs_are_read_from_the_records(tmp_path):
    records = [
        dict(model="glow", params=1234, seconds_per_step=0.2, steps=2400, run_wall_s=530.2,
             test_bpd=1.5, best_val_bpd=1.49, sample_s_per_image=1e-3, test_bpd_median=1.45,
             test_images_over_8_bpd=0, test_bpd_max=2.5),
        dict(model="tarflow", params=56789, seconds_per_step=1.25, steps=384,
             test_bpd=1.75, best_val_bpd=1.7, sample_s_per_image=2e-2, test_bpd_median=1.7,
             test_images_over_8_bpd=2, test_bpd_max=2925.5,
             sample_s_per_image_jacobi=3e-2, jacobi_max_abs_diff=1e-3)]
    out = tmp_path / "docs" / "eq.json"
    equal_time.write_outputs(str(out), records, str(tmp_path / "runs"), 480.0, "cmd")
    assert json.loads(out.read_text())["runs"] == records
    table = (tmp_path / "docs" / "eq.md").read_text().splitlines()
    assert table[4] == ("| glow | 1,234 | 0.200 | 2400 | 530 | 1.500 | 1.450 | 0 (2.5) | "
                        "1.490 | 1.00 |")
    assert table[5] == ("| tarflow | 56,789 | 1.250 | 384 | - | 1.750 | 1.700 | 2 (2925.5) | "
                        "1.700 | 20.00 scan / 30.00 Jacobi (max diff 1.0e-03) |")
    assert (tmp_path / "docs" / "eq.png").stat().st_size > 0


@pytest.mark.parametrize("bad", [["--models=glow,flowz"], ["--models="], ["--budget=0"],
                                 ["--budget=nan"], ["--pilot_steps=0"]])
def test_bad_arguments_are_refused(tmp_path, bad):
    with pytest.raises(SystemExit) as e:
        equal_time.parse_args(["--workdir", str(tmp_path), "--output",
                               str(tmp_path / "o.json")] + bad)
    assert e.value.code == 2


def test_a_run_of_another_budget_is_refused(tmp_path, capsys):
    """A work directory trained for another budget: one error line, exit 2, nothing run."""
    wd = tmp_path / "runs" / "glow"
    wd.mkdir(parents=True)
    (wd / "equal_time.json").write_text(json.dumps(
        {"model": "glow", "budget_s": 100.0, "seconds_per_step": 0.2}))
    code = equal_time.main(["--workdir", str(tmp_path / "runs"), "--output",
                            str(tmp_path / "o.json"), "--budget=480", "--models=glow"])
    assert code == 2
    err = capsys.readouterr().err
    assert "trained for a budget of 100.0 s, not 480.0 s" in err and err.startswith("error:")
    assert not (tmp_path / "o.json").exists()
