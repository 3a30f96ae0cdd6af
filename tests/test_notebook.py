"""The quickstart notebook runs end to end (tiny settings), so it never rots.

``experiments/notebooks/quickstart.py`` (jupytext percent format, the source of truth of
``quickstart.ipynb``) is executed as a script in this process with
``JAXFLOWS_NOTEBOOK_TINY=1``: install cell skipped (jaxflows is importable), accelerator
detected (the suite runs on CPU, so it must say it falls back to CPU), a Glow trained on
``digits`` through ``jaxflows.train.train_and_evaluate``, curves and samples drawn,
densities computed with the trained flow and with a residual block through
``jaxflows.as_functions``. The checks read the values the notebook prints and leaves.
"""
import math
import os
import re
import runpy

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = os.path.join(ROOT, "experiments", "notebooks", "quickstart.py")
NOTEBOOK = os.path.join(ROOT, "experiments", "notebooks", "quickstart.ipynb")


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """``(namespace, stdout)`` of one tiny execution of the notebook's script."""
    import matplotlib
    matplotlib.use("Agg")   # plt.show() is a no-op: nothing opens a window
    import contextlib
    import io
    workdir = str(tmp_path_factory.mktemp("quickstart"))
    saved = {k: os.environ.get(k) for k in ("JAXFLOWS_NOTEBOOK_TINY",
                                            "JAXFLOWS_NOTEBOOK_WORKDIR")}
    os.environ["JAXFLOWS_NOTEBOOK_TINY"] = "1"
    os.environ["JAXFLOWS_NOTEBOOK_WORKDIR"] = workdir
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            namespace = runpy.run_path(SOURCE, run_name="__main__")
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        import matplotlib.pyplot as plt
        plt.close("all")
    return namespace, out.getvalue(), workdir


def _number(text, pattern):
    match = re.search(pattern, text)
    assert match, f"{pattern!r} not found in the notebook's output:\n{text}"
    return float(match.group(1))


def test_notebook_runs_tiny_and_says_cpu(executed):
    ns, out, workdir = executed
    assert ns["TINY"] is True
    assert "skipping the installation" in out
    assert "falling back to CPU" in out
    # trained through the library's trainer in the given work directory
    assert ns["results"]["step"] == ns["config"].num_train_steps == 6
    for name in ("metrics.jsonl", "curves.png", "results.json", "samples_T0.7.png"):
        assert os.path.exists(os.path.join(workdir, name)), name


def test_notebook_model_learned_and_densities_agree(executed):
    ns, out, _ = executed
    test_bpd = _number(out, r"test bits/dim ([0-9.]+)")
    assert math.isfinite(test_bpd) and test_bpd < math.log2(17)   # below uniform
    # bits/dim of single test digits: the same model, about the same figure
    bpd = np.asarray(ns["bpd"])
    assert bpd.shape == (8,) and np.all(np.abs(bpd - test_bpd) < 0.5)
    # the residual block's exact log-det matches jacfwd, its density has mass 1 on the
    # grid, and its fixed-point inverse converged
    assert _number(out, r"log-det vs jacfwd, max error: ([0-9.e+-]+)") < 1e-4
    assert abs(_number(out, r"probability mass on \[-5, 5\]\^2: ([0-9.]+)") - 1.0) < 0.01
    assert _number(out, r"max \|f\(f\^-1\(y\)\) - y\| = ([0-9.e+-]+)") < 1e-4
    assert "not converged: 0" in out
    # the densities were computed on 8 dequantised test digits of the dataset's shape
    assert ns["x"].shape == (8, 8, 8, 1)


def test_notebook_install_cell_refuses_without_source(executed, tmp_path):
    ns, _, _ = executed
    with pytest.raises(RuntimeError, match="JAXFLOWS_REPO_URL"):
        ns["_install_jaxflows"]("", target=str(tmp_path / "absent"))


def test_ipynb_is_the_paired_source():
    jupytext = pytest.importorskip("jupytext")
    py = jupytext.read(SOURCE)
    nb = jupytext.read(NOTEBOOK)
    assert [(c.cell_type, c.source) for c in nb.cells] == [
        (c.cell_type, c.source) for c in py.cells], (
        "quickstart.ipynb is out of date: run `jupytext --sync "
        "experiments/notebooks/quickstart.py` (or --to ipynb).")
