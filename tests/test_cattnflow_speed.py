"""Smoke test of experiments/benchmarks/cattnflow_speed.py at its tiniest settings.

The benchmark's own ``main``, in-process, timing iTrans against none (``--attentions``;
iMap goes through the same code): the JSON it writes has a row per attention with
positive finite times, the ratios to "none" are the quotients of those times, the losses
and samples are finite, and bad arguments stop the command line before anything is
compiled. The speed figures themselves are produced by running the benchmark
(docs/benchmarks/cattnflow_speed.json).
"""
import json
import math

import pytest

from experiments.benchmarks import cattnflow_speed as bench

TINY = ["--tasks=sr", "--hr=4,4,3", "--scale=2", "--levels=1", "--steps=1", "--hidden=4",
        "--rrdb_features=2", "--rrdb_growth=2", "--rrdb_blocks=1", "--heads=3",
        "--batch=2", "--repeats=1", "--attentions=itrans"]


def test_cattnflow_speed_tiny(tmp_path, capsys):
    out = tmp_path / "cattnflow_speed.json"
    result = bench.main(TINY + [f"--out={out}"])
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(result))
    rows = written["results"]["sr"]
    assert set(rows) == {"itrans", "none"}
    for attention, row in rows.items():
        for key in ("train_step_s", "train_compile_s", "sample_s_per_image",
                    "sample_compile_s"):
            assert math.isfinite(row[key]) and row[key] > 0, (attention, key, row[key])
        assert math.isfinite(row["loss_bits_per_dim"]) and row["samples_finite"]
        assert row["params"] > 0
    # the attention adds parameters to the same flow
    assert rows["itrans"]["params"] > rows["none"]["params"]
    row = rows["itrans"]
    assert row["train_step_ratio"] == pytest.approx(
        row["train_step_s"] / rows["none"]["train_step_s"])
    assert row["sample_ratio"] == pytest.approx(
        row["sample_s_per_image"] / rows["none"]["sample_s_per_image"])
    assert written["source"]["ratio_to_none"]["imap"] == pytest.approx(0.104 / 0.077)
    assert written["source"]["ratio_to_none"]["itrans"] == pytest.approx(0.317 / 0.077)
    table = capsys.readouterr().out
    assert "itrans  / none" in table and f"{rows['itrans']['sample_ratio']:.2f}x" in table
    for bad in (["--tasks=sr,video"], ["--hr=4,4"], ["--scale=3"], ["--repeats=0"],
                ["--attentions=none"]):
        with pytest.raises(SystemExit):
            bench.main(TINY + bad + [f"--out={out}"])
