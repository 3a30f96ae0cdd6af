"""Checkpoints of a run: the last N regular ones plus the best one on validation.

Layout in the work directory (orbax ``CheckpointManager``; each save is written to a
temporary directory and renamed when complete, so a crash never leaves a
half-written checkpoint that could be restored)::

    checkpoints/<step>/{state, loader, meta}   last ``keep`` steps, resume from here
    best/<step>/{state, meta}                  the checkpoint best on validation

``state`` is the :class:`TrainState`, ``loader`` the data-loader iterator state (so a
resumed run sees the same batches), ``meta`` a JSON record with the model
fingerprint, the best validation figure so far and the partial train-metric sums.
"""
from __future__ import annotations

import base64
import json
import os
from typing import Any, Optional, Tuple

import jax
import orbax.checkpoint as ocp

__all__ = ["Checkpoints", "read_fingerprint", "encode_loader_state", "decode_loader_state",
           "latest_step"]

REGULAR = "checkpoints"
BEST = "best"


def encode_loader_state(state: Any) -> Any:
    """JSON-able form of a loader state (bytes are base64-encoded)."""
    if isinstance(state, (bytes, bytearray)):
        return {"__bytes_b64__": base64.b64encode(bytes(state)).decode("ascii")}
    json.dumps(state)  # raises TypeError early if it is not JSON-able
    return state


def decode_loader_state(state: Any) -> Any:
    """The loader state encoded by :func:`encode_loader_state`."""
    if isinstance(state, dict) and set(state) == {"__bytes_b64__"}:
        return base64.b64decode(state["__bytes_b64__"])
    return state


def _steps_in(directory: str):
    if not os.path.isdir(directory):
        return []
    return sorted(int(d) for d in os.listdir(directory)
                  if d.isdigit() and os.path.isdir(os.path.join(directory, d)))


def latest_step(workdir: str, which: str = REGULAR) -> Optional[int]:
    """Latest complete checkpoint step in ``workdir/<which>``, or None (no I/O writes)."""
    steps = _steps_in(os.path.join(workdir, which))
    return steps[-1] if steps else None


def read_fingerprint(workdir: str) -> Optional[Tuple[str, Any]]:
    """``(fingerprint, description)`` stored with the latest checkpoint, or None.

    Reads only; creates nothing. Used to refuse a work directory that holds a
    checkpoint of another model before anything is written to it.
    """
    for which in (REGULAR, BEST):
        step = latest_step(workdir, which)
        if step is None:
            continue
        mngr = ocp.CheckpointManager(
            os.path.join(workdir, which), item_names=("meta",),
            options=ocp.CheckpointManagerOptions(read_only=True, create=False))
        meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        mngr.close()
        return meta.get("fingerprint"), meta.get("model")
    return None


class Checkpoints:
    """The two checkpoint managers of a run (regular and best)."""

    def __init__(self, workdir: str, keep: int):
        """Managers of ``workdir/checkpoints`` (the last ``keep``) and ``workdir/best``."""
        opts = dict(create=True, enable_async_checkpointing=False,
                    cleanup_tmp_directories=True)
        self.regular = ocp.CheckpointManager(
            os.path.join(os.path.abspath(workdir), REGULAR),
            item_names=("state", "loader", "meta"),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, **opts))
        self.best = ocp.CheckpointManager(
            os.path.join(os.path.abspath(workdir), BEST), item_names=("state", "meta"),
            options=ocp.CheckpointManagerOptions(max_to_keep=1, **opts))

    def latest_step(self) -> Optional[int]:
        """The latest regular checkpoint's step, or None."""
        return self.regular.latest_step()

    def save(self, state, loader_state, meta: dict):
        """A regular checkpoint at ``state.step`` (nothing if there is one already)."""
        step = int(jax.device_get(state.step))
        if step in self.regular.all_steps():
            return
        self.regular.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            loader=ocp.args.JsonSave(encode_loader_state(loader_state)),
            meta=ocp.args.JsonSave(meta)))
        self.regular.wait_until_finished()

    def save_best(self, state, meta: dict):
        """The best checkpoint, replacing any at this or a later step."""
        step = int(jax.device_get(state.step))
        for old in self.best.all_steps():
            if old >= step:
                self.best.delete(old)
        self.best.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
        self.best.wait_until_finished()

    def restore(self, abstract_state, step: Optional[int] = None):
        """``(state, loader_state, meta)`` of the latest (or given) regular checkpoint."""
        step = self.regular.latest_step() if step is None else step
        out = self.regular.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            loader=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore()))
        return out["state"], decode_loader_state(out["loader"]), out["meta"]

    def restore_best(self, abstract_state):
        """``(state, meta)`` of the best checkpoint, or None if there is none."""
        step = self.best.latest_step()
        if step is None:
            return None
        out = self.best.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
        return out["state"], out["meta"]

    def drop_best_after(self, step: int):
        """Forget best checkpoints newer than ``step`` (written after the one resumed)."""
        for s in self.best.all_steps():
            if s > step:
                self.best.delete(s)

    def close(self):
        """Close both managers."""
        self.regular.close()
        self.best.close()


def restore_for_eval(workdir: str, abstract_state, which: str = BEST):
    """Restore ``(state, meta, step)`` from ``workdir/<which>`` (falls back to regular)."""
    for name in ((which, REGULAR) if which == BEST else (which,)):
        step = latest_step(workdir, name)
        if step is None:
            continue
        items = ("state", "meta")
        mngr = ocp.CheckpointManager(
            os.path.join(os.path.abspath(workdir), name), item_names=items,
            options=ocp.CheckpointManagerOptions(read_only=True, create=False))
        out = mngr.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
        mngr.close()
        return out["state"], out["meta"], step
    raise FileNotFoundError(f"No checkpoint in {workdir!r} (looked in {which}/ and "
                            f"{REGULAR}/): train first with experiments/train.py.")
