"""Smoke test of experiments/benchmarks/memory.py on a tiny model: the Neumann estimator's
compiled memory does not grow with the number of series terms, backprop through the
series does, and both compute the same loss."""
import importlib.util
import json
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("memory_benchmark",
                                                  ROOT / "experiments" / "benchmarks" / "memory.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_memory_benchmark_tiny(bench, tmp_path, capsys):
    out = tmp_path / "memory.json"
    b, h, w, c, hidden = 2, 4, 4, 2, 4
    result = bench.main(["--terms=2,8", "--blocks=1", f"--hidden={hidden}", f"--batch={b}",
                         f"--shape={h},{w},{c}", "--run", f"--out={out}"])
    rows = {(r["method"], r["n_terms"]): r for r in result["rows"]}
    assert json.loads(out.read_text())["rows"] == result["rows"]
    assert "naive/neumann" in capsys.readouterr().out
    neumann = [rows[("neumann", n)]["temp_bytes"] for n in (2, 8)]
    naive = [rows[("naive", n)]["temp_bytes"] for n in (2, 8)]
    assert neumann[1] <= neumann[0] + 1024, neumann
    # backprop through 6 more terms stores at least one hidden activation per term
    assert naive[1] - naive[0] >= 6 * b * h * w * hidden * 4, naive
    for n in (2, 8):  # same probes, same terms: the same loss, only the gradient differs
        assert rows[("neumann", n)]["loss"] == pytest.approx(rows[("naive", n)]["loss"], rel=1e-5)
    with pytest.raises(SystemExit):
        bench.main(["--methods=magic", f"--out={out}"])
