"""Metrics written by a run: JSON lines, and the running mean of train metrics."""
from __future__ import annotations

import json
import math
import os
from typing import Dict, List, Optional

__all__ = ["MetricsLog", "RunningMean"]


class RunningMean:
    """Mean of per-step scalars over a logging interval (skipped steps excluded).

    Its sums are plain Python floats, saved in the checkpoint, so a resumed run
    reports exactly the same interval means as an uninterrupted one.
    """

    def __init__(self, state: Optional[dict] = None):
        state = state or {}
        self.sums: Dict[str, float] = dict(state.get("sums", {}))
        self.count: int = int(state.get("count", 0))

    def add(self, values: Dict[str, float]):
        if not all(math.isfinite(v) for v in values.values()):
            return
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.count += 1

    def result(self) -> Dict[str, float]:
        return {k: v / self.count for k, v in self.sums.items()} if self.count else {}

    def reset(self):
        self.sums, self.count = {}, 0

    def state(self) -> dict:
        return {"sums": dict(self.sums), "count": self.count}


class MetricsLog:
    """``metrics.jsonl`` in the work directory: one JSON object per line with ``step``.

    Only process 0 writes. On resume, :meth:`truncate` drops lines newer than the
    restored checkpoint, so the file ends up identical to an uninterrupted run's.
    """

    def __init__(self, path: str, enabled: bool = True):
        self.path = path
        self.enabled = enabled

    def read(self) -> List[dict]:
        if not os.path.exists(self.path):
            return []
        with open(self.path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def truncate(self, step: int):
        if not self.enabled:
            return
        records = [r for r in self.read() if r.get("step", 0) <= step]
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            for r in records:
                f.write(json.dumps(r, sort_keys=True) + "\n")
        os.replace(tmp, self.path)

    def write(self, record: dict):
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
