"""The quickstart notebook runs end to end (tiny settings), so it never rots.

``experiments/notebooks/quickstart.py`` (jupytext percent format, the source of truth of
``quickstart.ipynb``) is executed as a script in this process with
``JAXFLOWS_NOTEBOOK_TINY=1``: install cell skipped (jaxflows is importable), accelerator
detected (the suite runs on CPU, so it must say it falls back to CPU), a Glow trained on
``digits`` through ``jaxflows.train.train_and_evaluate``, curves and samples drawn,
densities computed with the trained flow and with a residual block through
``jaxflows.as_functions``. The checks read the values the notebook prints and leaves.
The Colab branches that this CPU machine cannot take are run with fakes: the install
cell on a TPU, GPU and CPU runtime (its pip commands recorded, the accelerator's JAX
build checked against the pin of ``requirements.txt``) and the accelerator's one line.
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


def _pin(package):
    """The version ``requirements.txt`` pins ``package`` to."""
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        for line in f:
            if line.startswith(f"{package}=="):
                return line.strip().split("==")[1]
    raise AssertionError(f"{package} is not pinned in requirements.txt")


@pytest.mark.parametrize("accelerator", ["tpu", "gpu", "cpu"])
def test_notebook_install_cell_on_each_runtime(executed, tmp_path, monkeypatch, accelerator):
    """The Colab install cell, its commands recorded instead of run: the accelerator's JAX
    build at the pinned version, the pinned requirements without TensorFlow, the test
    tools or (on an accelerator) a second JAX, then jaxflows itself without dependencies.
    """
    import shutil
    import subprocess
    import sys
    import types
    ns, _, _ = executed
    target = tmp_path / "jaxflows"
    target.mkdir()
    shutil.copy(os.path.join(ROOT, "requirements.txt"), target / "requirements.txt")
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(list(cmd))
        found = accelerator == "gpu" and cmd[:2] == ["sh", "-c"]
        return types.SimpleNamespace(returncode=0 if found else 1)

    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(sys, "path", list(sys.path))
    if accelerator == "tpu":
        monkeypatch.setenv("COLAB_TPU_ADDR", "10.0.0.2:8470")
    else:
        monkeypatch.delenv("COLAB_TPU_ADDR", raising=False)
    if os.path.exists("/dev/accel0"):
        pytest.skip("this machine has a TPU device file: the branches cannot be faked")
    ns["_install_jaxflows"]("unused://", target=str(target))
    pips = [c for c in calls if c[1:4] == ["-m", "pip", "install"]]
    jax = _pin("jax")
    expected = {"tpu": [f"jax[tpu]=={jax}"], "gpu": [f"jax[cuda12]=={jax}"], "cpu": []}
    builds = [c[5:] for c in pips if any(a.startswith("jax[") for a in c)]
    assert builds == ([expected[accelerator]] if expected[accelerator] else [])
    reqs = [c for c in pips if f"flax=={_pin('flax')}" in c]
    assert len(reqs) == 1
    assert not any(a.startswith(("tensorflow==", "pytest", "ruff")) for a in reqs[0])
    has_jax = f"jax=={jax}" in reqs[0]
    assert has_jax == (accelerator == "cpu")     # an accelerator keeps its own build
    assert pips[-1][-3:] == ["--no-deps", "-e", str(target)]
    assert not any(c[0] == "git" for c in calls)   # the target existed: no clone
    assert sys.path[0] == os.path.abspath(str(target))


@pytest.mark.parametrize("backend, kinds, expected", [
    ("tpu", ["TPU v2"] * 8, "Accelerator: TPU, 8 x TPU v2."),
    ("gpu", ["Tesla T4"], "Accelerator: GPU, 1 x Tesla T4."),
])
def test_notebook_names_the_accelerator(executed, monkeypatch, backend, kinds, expected):
    import types
    ns, _, _ = executed
    jax = ns["jax"]
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    monkeypatch.setattr(jax, "devices", lambda: [types.SimpleNamespace(device_kind=k)
                                                 for k in kinds])
    assert ns["describe_accelerator"]() == expected
