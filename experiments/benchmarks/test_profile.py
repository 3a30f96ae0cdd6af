"""Where the test suite's time goes: a summary of a profiled pytest run.

Run the suite with ``JAXFLOWS_TEST_PROFILE=<dir>`` (see ``tests/conftest.py``), then::

    python experiments/benchmarks/test_profile.py <dir> [--top 40]

It prints the total wall time of the tests (summed over workers), the seconds spent in
JAX tracing, lowering to MLIR and XLA compilation, the compile seconds saved by the
persistent compilation cache (``JAX_COMPILATION_CACHE_DIR``), and the slowest tests and
test files with the same breakdown.
"""
from __future__ import annotations

import argparse
import collections
import glob
import json
import os

FIELDS = ("wall", "trace", "lower", "compile", "saved")


def load(directory: str):
    rows = []
    for path in sorted(glob.glob(os.path.join(directory, "*.jsonl"))):
        with open(path) as f:
            rows.extend(json.loads(line) for line in f if line.strip())
    if not rows:
        raise SystemExit(f"test_profile: no *.jsonl rows in {directory!r}; run pytest with "
                         "JAXFLOWS_TEST_PROFILE set to that directory first.")
    return rows


def _line(name, r):
    return (f"{r.get('wall', 0):8.1f} {r.get('trace', 0):7.1f} {r.get('lower', 0):7.1f} "
            f"{r.get('compile', 0):8.1f} {r.get('saved', 0):7.1f}  {name}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("directory")
    p.add_argument("--top", type=int, default=40)
    args = p.parse_args(argv)
    rows = load(args.directory)
    total = collections.Counter()
    files = collections.defaultdict(collections.Counter)
    for r in rows:
        for k in FIELDS:
            total[k] += r.get(k, 0.0)
            files[r["test"].split("::")[0]][k] += r.get(k, 0.0)
    head = f"{'wall s':>8} {'trace':>7} {'lower':>7} {'compile':>8} {'saved':>7}"
    print(f"{len(rows)} tests")
    print(head)
    print(_line("TOTAL (summed over workers)", total))
    print("\nslowest files")
    for name, r in sorted(files.items(), key=lambda kv: -kv[1]["wall"])[:args.top]:
        print(_line(name, r))
    failed = [r["test"] for r in rows if r.get("failed")]
    if failed:
        print(f"\n{len(failed)} failed: " + ", ".join(failed))
    print("\nslowest tests")
    for r in sorted(rows, key=lambda r: -r["wall"])[:args.top]:
        print(_line(r["test"], r))


if __name__ == "__main__":
    main()
