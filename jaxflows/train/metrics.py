"""Metrics written by a run: JSON lines, and the running mean of train metrics."""
from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Dict, List, Optional

__all__ = ["MetricsLog", "RunningMean"]


@dataclasses.dataclass(frozen=True)
class RunningMean:
    """Mean of per-step scalars over a logging interval (skipped steps excluded); immutable.

    Its sums are plain Python floats, saved in the checkpoint (:meth:`state`,
    :meth:`from_state`), so a resumed run reports exactly the same interval means as an
    uninterrupted one. ``skipped`` counts the steps of the interval that were skipped
    (non-finite loss or gradient), so that an interval in which every step was skipped
    still has something to report.
    """

    sums: Dict[str, float] = dataclasses.field(default_factory=dict)
    count: int = 0
    skipped: int = 0

    @classmethod
    def from_state(cls, state: Optional[dict]) -> "RunningMean":
        """The running mean saved as ``state`` (``None``: an empty one)."""
        state = state or {}
        return cls(dict(state.get("sums", {})), int(state.get("count", 0)),
                   int(state.get("skipped", 0)))

    @property
    def steps(self) -> int:
        """Steps of the interval so far, finite and skipped."""
        return self.count + self.skipped

    def add(self, values: Dict[str, float]) -> "RunningMean":
        """The running mean with ``values`` added (a skipped step if one is not finite)."""
        if not all(math.isfinite(v) for v in values.values()):
            return self.skip()
        sums = dict(self.sums)
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        return RunningMean(sums, self.count + 1, self.skipped)

    def skip(self) -> "RunningMean":
        """The running mean with one more skipped step."""
        return RunningMean(dict(self.sums), self.count, self.skipped + 1)

    def result(self) -> Dict[str, float]:
        """The means (empty if nothing was added)."""
        return {k: v / self.count for k, v in self.sums.items()} if self.count else {}

    def state(self) -> dict:
        """JSON-able state for the checkpoint."""
        return {"sums": dict(self.sums), "count": self.count, "skipped": self.skipped}


class MetricsLog:
    """``metrics.jsonl`` in the work directory: one JSON object per line with ``step``.

    Only process 0 writes. On resume, :meth:`truncate` drops lines newer than the
    restored checkpoint, so the file ends up identical to an uninterrupted run's.
    """

    def __init__(self, path: str, enabled: bool = True):
        """The log at ``path``; with ``enabled=False`` (processes other than 0) writes nothing."""
        self.path = path
        self.enabled = enabled

    def read(self) -> List[dict]:
        """Every record of the file (``[]`` if there is none)."""
        if not os.path.exists(self.path):
            return []
        with open(self.path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def truncate(self, step: int):
        """Drop the records of steps after ``step``."""
        if not self.enabled:
            return
        records = [r for r in self.read() if r.get("step", 0) <= step]
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            for r in records:
                f.write(json.dumps(r, sort_keys=True) + "\n")
        os.replace(tmp, self.path)

    def write(self, record: dict):
        """Append ``record`` as one JSON line."""
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
