"""experiments/flowpp_ablation.py: the table is computed from the runs' files, not typed.

Runs are faked here (``results.json`` and ``metrics.jsonl`` written by the test); the
training itself is the trainer's, tested elsewhere, on configs ``tests/test_configs.py``
builds.
"""
import json
import os

import pytest

from experiments import flowpp_ablation

BPD = {("small", 0): 2.60, ("small", 1): 2.62, ("small_uniform", 0): 2.70,
       ("small_uniform", 1): 2.74, ("small_affine", 0): 2.65, ("small_noattn", 1): 2.63}


def fake_runs(root):
    for (variant, seed), bpd in BPD.items():
        wd = flowpp_ablation.run_dir(str(root), variant, seed)
        os.makedirs(wd)
        with open(os.path.join(wd, "results.json"), "w") as f:
            json.dump({"test_bpd": bpd}, f)
        with open(os.path.join(wd, "metrics.jsonl"), "w") as f:
            for step in (50, 100):
                f.write(json.dumps({"step": step, "train_bpd": bpd + 1.0 / step}) + "\n")


def test_table_from_the_runs(tmp_path):
    fake_runs(tmp_path / "runs")
    out = tmp_path / "doc" / "table.md"
    assert flowpp_ablation.main(["--workdir", str(tmp_path / "runs"), "--output", str(out),
                                 "--report_only"]) == 0
    rows = {line.split("|")[2].strip(" `"): [c.strip() for c in line.split("|")[3:-1]]
            for line in out.read_text().splitlines()[2:]}
    assert rows["small"] == ["2.600", "2.620", "2.610 ± 0.010", ""]
    assert rows["small_uniform"] == ["2.700", "2.740", "2.720 ± 0.020", "+0.110"]
    assert rows["small_affine"] == ["2.650", "-", "2.650 ± 0.000", "+0.040"]
    assert rows["small_noattn"] == ["-", "2.630", "2.630 ± 0.000", "+0.020"]
    assert (tmp_path / "doc" / "table.png").stat().st_size > 0


@pytest.mark.parametrize("seeds", ["0", "0,0", "a,b"])
def test_bad_seeds_are_refused(tmp_path, seeds):
    with pytest.raises(SystemExit) as e:
        flowpp_ablation.main(["--workdir", str(tmp_path), "--output", str(tmp_path / "t.md"),
                              "--seeds", seeds, "--report_only"])
    assert e.value.code == 2


def test_no_finished_runs_is_an_error(tmp_path):
    assert flowpp_ablation.main(["--workdir", str(tmp_path), "--output",
                                 str(tmp_path / "t.md"), "--report_only"]) == 2
