"""Smoke test of experiments/benchmarks/memory.py on a tiny model.

One compiled step, to keep the test cheap: command line, table, JSON, and a finite loss. That
the Neumann estimator's memory does not grow with the number of terms while backprop through
the series does, and that both give the same value, is tested on an MLP in test_ops_logdet.py;
the full table is produced by running the benchmark.
"""
import json
import math

import pytest

from experiments.benchmarks import memory as bench


def test_memory_benchmark_tiny(tmp_path, capsys):
    out = tmp_path / "memory.json"
    b, h, w, c, hidden = 2, 4, 4, 2, 4
    result = bench.main(["--terms=3", "--methods=neumann", "--blocks=1", f"--hidden={hidden}",
                         f"--batch={b}", f"--shape={h},{w},{c}", "--run", f"--out={out}"])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    (row,) = result["rows"]
    assert row["method"] == "neumann" and row["n_terms"] == 3
    # the step's scratch memory holds at least the hidden activations of the block
    assert row["temp_bytes"] >= b * h * w * hidden * 4
    assert row["peak_bytes"] >= row["temp_bytes"] and math.isfinite(row["loss"])
    table = capsys.readouterr().out
    assert "naive/neumann" in table and f"{row['peak_bytes'] / 2 ** 20:9.1f}" in table
    for bad in (["--methods=magic"], ["--terms=0"], ["--shape=4,4"]):
        with pytest.raises(SystemExit):
            bench.main(bad + [f"--out={out}"])
