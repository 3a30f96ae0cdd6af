"""Checkpoints of a run: the last N regular ones plus the best one on validation.

Layout in the work directory (orbax ``CheckpointManager``; each save is written to a
temporary directory and renamed when complete, so a crash never leaves a
half-written checkpoint that could be restored)::

    checkpoints/<step>/{state, loader, meta, SHA256SUMS}   last ``keep`` steps, resume here
    best/<step>/{state, meta, SHA256SUMS}                  the checkpoint best on validation
    damaged/<which>-<step>[-<n>]/                          damaged steps moved aside on resume

``state`` is the :class:`TrainState`, ``loader`` the data-loader iterator state (so a
resumed run sees the same batches), ``meta`` a JSON record with the model
fingerprint, the best validation figure so far and the partial train-metric sums.

Integrity. orbax (0.12) does not checksum the data it writes: a same-size corruption
of a data file loads silently (tensorstore's zarr3 CRC covers only a shard's index).
So every save is followed by a manifest ``SHA256SUMS`` in the step directory (the
format of ``sha256sum``: ``sha256sum -c SHA256SUMS`` inside the step directory checks
it by hand), written atomically. A restore checks, newest step first:

1. the manifest: every listed file present, of the listed size and SHA-256;
2. that orbax can read the step (a truncated or garbled file raises);
3. that every floating-point leaf of the restored :class:`TrainState` is finite
   (a trained state never holds NaN or inf: non-finite steps are skipped).

The first step passing all three is used; each failing one is reported with its step
and file (or item) and, when resuming training, moved to ``damaged/`` so that the run
can write that step again. A step without a manifest (written by an older version, or
when the process died between orbax's rename and the manifest) is checked by 2 and 3
only, with a warning. When no step passes, :class:`CheckpointError` (a
``ValueError``) lists what was wrong with each.

What is not guaranteed: a corruption that happens before the manifest is computed
(e.g. in memory, or a disk that returns wrong bytes on the first read after a write)
is recorded in the manifest and not detected; only the process writing the manifest
(process 0) hashes the files, so on several hosts the files must be on a shared file
system for the manifest to cover them.
"""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import logging
import os
import shutil
from typing import Any, List, Optional, Sequence, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp

__all__ = ["Checkpoints", "CheckpointError", "read_fingerprint", "encode_loader_state",
           "decode_loader_state", "latest_step", "restore_for_eval", "write_manifest",
           "verify_step", "MANIFEST"]

log = logging.getLogger("jaxflows.train")

REGULAR = "checkpoints"
BEST = "best"
DAMAGED = "damaged"
MANIFEST = "SHA256SUMS"
_CHUNK = 1 << 20


class CheckpointError(ValueError):
    """No usable checkpoint: each one found is damaged or unreadable (the message says how)."""


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
    """Latest complete checkpoint step in ``workdir/<which>``, or None (no I/O writes).

    Complete, not necessarily intact: restoring verifies it (see the module docstring).
    """
    steps = _steps_in(os.path.join(workdir, which))
    return steps[-1] if steps else None


# ----------------------------------------------------------------------------- manifests

def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _files_under(step_dir: str) -> List[str]:
    out = []
    for root, dirs, files in os.walk(step_dir):
        dirs.sort()
        for name in sorted(files):
            rel = os.path.relpath(os.path.join(root, name), step_dir)
            if rel != MANIFEST and not rel.startswith(MANIFEST + "."):
                out.append(rel)
    return out


def write_manifest(step_dir: str) -> str:
    """Writes ``step_dir/SHA256SUMS`` (``sha256sum`` format plus sizes); returns its path.

    One line ``<sha256>  <relative path>`` per file under ``step_dir``, preceded by a
    comment line per file ``# size <bytes> <relative path>``; written to a temporary
    file, flushed to disk and renamed, so a crash leaves either no manifest or a
    complete one.
    """
    lines = []
    for rel in _files_under(step_dir):
        path = os.path.join(step_dir, rel)
        lines.append(f"# size {os.path.getsize(path)} {rel}")
        lines.append(f"{_sha256(path)}  {rel}")
    target = os.path.join(step_dir, MANIFEST)
    tmp = target + ".tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(lines) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, target)
    return target


def _read_manifest(path: str):
    sizes, digests = {}, {}
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            if line.startswith("# size "):
                size, rel = line[len("# size "):].split(" ", 1)
                sizes[rel] = int(size)
            else:
                digest, rel = line.split("  ", 1)
                if len(digest) != 64:
                    raise ValueError(f"bad line {line!r}")
                digests[rel] = digest
    return sizes, digests


def verify_step(step_dir: str) -> Optional[str]:
    """What is wrong with the checkpoint files in ``step_dir`` per its manifest, or None.

    Returns ``None`` when every file listed in ``SHA256SUMS`` is present with its size
    and SHA-256, or when there is no manifest (then nothing can be checked here; the
    caller still restores and checks the values). Otherwise a message naming the
    first damaged file (relative to ``step_dir``).
    """
    path = os.path.join(step_dir, MANIFEST)
    if not os.path.exists(path):
        return None
    try:
        sizes, digests = _read_manifest(path)
    except (OSError, ValueError, UnicodeDecodeError) as e:
        return f"file {MANIFEST}: unreadable ({e})"
    for rel, digest in digests.items():
        file = os.path.join(step_dir, rel)
        if not os.path.isfile(file):
            return f"file {rel}: missing"
        size = os.path.getsize(file)
        if rel in sizes and size != sizes[rel]:
            return (f"file {rel}: {size} bytes, expected {sizes[rel]} (truncated or "
                    "overwritten)")
        try:
            actual = _sha256(file)
        except OSError as e:
            return f"file {rel}: unreadable ({e})"
        if actual != digest:
            return f"file {rel}: SHA-256 mismatch (the file changed after it was written)"
    return None


def _nonfinite_leaf(tree) -> Optional[str]:
    """The path of the first floating-point leaf of ``tree`` holding NaN or inf, or None."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if not hasattr(leaf, "dtype") or not np.issubdtype(leaf.dtype, np.inexact):
            continue
        if not np.all(np.isfinite(np.asarray(jax.device_get(leaf)))):
            return jax.tree_util.keystr(path)
    return None


@dataclasses.dataclass(frozen=True)
class _Found:
    """A restored, verified step: its ``items`` and ``step``."""

    items: dict
    step: int


def _describe(step: int, which: str, problem: str) -> str:
    return f"step {step} ({which}/{step}): {problem}"


def _restore_newest_good(directory: str, which: str, steps: Sequence[int], restore_step, *,
                         state_key: Optional[str], on_damaged=None,
                         quiet: bool = False) -> Tuple[_Found, list]:
    """The newest of ``steps`` (tried newest first) that verifies and restores.

    ``restore_step(step) -> dict of items``. Returns ``(found, problems)``, ``found``
    None when none did; ``problems`` lists ``(step, message)`` of the ones skipped.
    ``on_damaged(step, message)`` is called for each skipped step. ``quiet``: no
    warnings (the caller reports, or a later restore will).
    """
    problems = []
    for step in sorted(steps, reverse=True):
        step_dir = os.path.join(directory, str(step))
        problem = verify_step(step_dir)
        items = None
        if problem is None:
            if not quiet and not os.path.exists(os.path.join(step_dir, MANIFEST)):
                log.warning("%s/%d has no %s (written before manifests, or interrupted "
                            "just after the save): its files cannot be verified.",
                            which, step, MANIFEST)
            try:
                items = restore_step(step)
            except Exception as e:  # orbax raises many types for unreadable files
                first = str(e).strip().splitlines()[0] if str(e).strip() else ""
                problem = f"unreadable by orbax ({type(e).__name__}: {first[:300]})"
        if problem is None and state_key is not None:
            bad = _nonfinite_leaf(items[state_key])
            if bad is not None:
                problem = f"the restored state has NaN or inf in {state_key}{bad}"
        if problem is None:
            return _Found(items=items, step=step), problems
        problems.append((step, problem))
        if not quiet:
            log.warning("damaged checkpoint, %s", _describe(step, which, problem))
        if on_damaged is not None:
            on_damaged(step, problem)
    return None, problems


def _no_good_checkpoint(workdir: str, which: str, problems) -> CheckpointError:
    listed = "; ".join(_describe(s, which, p) for s, p in problems)
    return CheckpointError(
        f"no usable checkpoint in {os.path.join(workdir, which)!r}: {listed}. Restore the "
        f"work directory from a backup, or move it aside (or pass another --workdir) to "
        f"start afresh.")


def _read_only_manager(directory: str, items: Sequence[str]) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        directory, item_names=tuple(items),
        options=ocp.CheckpointManagerOptions(read_only=True, create=False))


def read_fingerprint(workdir: str) -> Optional[Tuple[str, Any]]:
    """``(fingerprint, description)`` stored with the newest intact checkpoint, or None.

    Reads only; creates nothing. Used to refuse a work directory that holds a
    checkpoint of another model before anything is written to it. Damaged steps are
    skipped (restoring reports them).
    """
    for which in (REGULAR, BEST):
        directory = os.path.join(os.path.abspath(workdir), which)
        steps = _steps_in(directory)
        if not steps:
            continue
        mngr = _read_only_manager(directory, ("meta",))
        try:
            found, _ = _restore_newest_good(
                directory, which, steps, state_key=None, quiet=True,
                restore_step=lambda s, mngr=mngr: mngr.restore(
                    s, args=ocp.args.Composite(meta=ocp.args.JsonRestore())))
        finally:
            mngr.close()
        if found is not None:
            meta = found.items["meta"]
            return meta.get("fingerprint"), meta.get("model")
    return None


class Checkpoints:
    """The two checkpoint managers of a run (regular and best), with verified restores."""

    def __init__(self, workdir: str, keep: int):
        """Managers of ``workdir/checkpoints`` (the last ``keep``) and ``workdir/best``."""
        self.workdir = os.path.abspath(workdir)
        self.keep = keep
        self.is_main = jax.process_index() == 0
        opts = dict(create=True, enable_async_checkpointing=False,
                    cleanup_tmp_directories=True)
        self.regular = ocp.CheckpointManager(
            os.path.join(self.workdir, REGULAR),
            item_names=("state", "loader", "meta"),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, **opts))
        self.best = ocp.CheckpointManager(
            os.path.join(self.workdir, BEST), item_names=("state", "meta"),
            options=ocp.CheckpointManagerOptions(max_to_keep=1, **opts))

    def latest_step(self) -> Optional[int]:
        """The latest regular checkpoint's step (not yet verified), or None."""
        return self.regular.latest_step()

    def _manifest(self, which: str, step: int):
        if self.is_main:
            write_manifest(os.path.join(self.workdir, which, str(step)))

    def prune(self):
        """Delete the oldest regular checkpoints beyond ``keep`` (and old best ones).

        orbax rotates after each save; this also covers steps left over by an
        interrupted run (e.g. killed during its final evaluation) that no later save
        would rotate.
        """
        for mngr, keep in ((self.regular, self.keep), (self.best, 1)):
            mngr.reload()
            steps = sorted(mngr.all_steps())
            for step in steps[:max(0, len(steps) - keep)]:
                mngr.delete(step)

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
        self._manifest(REGULAR, step)
        self.prune()

    def save_best(self, state, meta: dict):
        """The best checkpoint, replacing any at this or a later step."""
        step = int(jax.device_get(state.step))
        for old in self.best.all_steps():
            if old >= step:
                self.best.delete(old)
        self.best.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
        self.best.wait_until_finished()
        self._manifest(BEST, step)
        self.prune()

    def _quarantine(self, which: str, step: int, problem: str):
        """Move a damaged step to ``damaged/<which>-<step>`` so it can be written again."""
        if not self.is_main:
            return
        src = os.path.join(self.workdir, which, str(step))
        root = os.path.join(self.workdir, DAMAGED)
        os.makedirs(root, exist_ok=True)
        dst = os.path.join(root, f"{which}-{step}")
        n = 1
        while os.path.exists(dst):
            dst = os.path.join(root, f"{which}-{step}-{n}")
            n += 1
        shutil.move(src, dst)
        with open(os.path.join(dst, "DAMAGED.txt"), "w") as f:
            f.write(problem + "\n")
        log.warning("moved the damaged %s/%d to %s", which, step, dst)

    def restore(self, abstract_state, step: Optional[int] = None):
        """``(state, loader_state, meta)`` of the newest intact regular checkpoint.

        Steps are tried newest first (only ``step`` when given); each damaged one is
        reported (step and file) and moved to ``damaged/``, and the message says which
        step the run falls back to. Raises :class:`CheckpointError` when none is intact.
        """
        self.regular.reload()
        steps = [step] if step is not None else list(self.regular.all_steps())

        def restore_step(s):
            return self.regular.restore(s, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                loader=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore()))

        found, problems = _restore_newest_good(
            os.path.join(self.workdir, REGULAR), REGULAR, steps, restore_step,
            state_key="state",
            on_damaged=lambda s, p: self._quarantine(REGULAR, s, p))
        self.regular.reload()
        if found is None:
            raise _no_good_checkpoint(self.workdir, REGULAR, problems)
        if problems:
            log.warning("falling back to the checkpoint at step %d (newest intact one); "
                        "damaged: %s", found.step,
                        ", ".join(f"step {s}" for s, _ in problems))
            # a best checkpoint newer than the fallback was made by the lost steps
            self.drop_best_after(found.step)
        out = found.items
        return out["state"], decode_loader_state(out["loader"]), out["meta"]

    def restore_best(self, abstract_state):
        """``(state, meta)`` of the best checkpoint; None if there is none or it is damaged.

        A damaged best checkpoint is reported (step and file) and moved to
        ``damaged/``.
        """
        self.best.reload()
        steps = list(self.best.all_steps())
        if not steps:
            return None

        def restore_step(s):
            return self.best.restore(s, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))

        found, _ = _restore_newest_good(
            os.path.join(self.workdir, BEST), BEST, steps, restore_step, state_key="state",
            on_damaged=lambda s, p: self._quarantine(BEST, s, p))
        self.best.reload()
        if found is None:
            return None
        return found.items["state"], found.items["meta"]

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
    """Restore ``(state, meta, step)`` from ``workdir/<which>``, verified; reads only.

    ``which="best"`` falls back to the regular checkpoints when there is no intact
    best one; within a directory, damaged steps are reported (step and file) and the
    next older intact one is used. Nothing is moved or written.

    Raises:
      FileNotFoundError: no checkpoint at all (train first).
      CheckpointError: checkpoints exist but none is intact (the message lists why).
    """
    workdir = os.path.abspath(workdir)
    problems_all, looked = [], []
    for name in ((which, REGULAR) if which == BEST else (which,)):
        directory = os.path.join(workdir, name)
        steps = _steps_in(directory)
        looked.append(name)
        if not steps:
            continue
        mngr = _read_only_manager(directory, ("state", "meta"))

        def restore_step(s, mngr=mngr):
            return mngr.restore(s, args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))

        try:
            found, problems = _restore_newest_good(directory, name, steps, restore_step,
                                                   state_key="state")
        finally:
            mngr.close()
        problems_all += [(s, name, p) for s, p in problems]
        if found is not None:
            if problems_all:
                log.warning("using %s/%d instead (the newest intact checkpoint)", name,
                            found.step)
            return found.items["state"], found.items["meta"], found.step
    if problems_all:
        listed = "; ".join(_describe(s, n, p) for s, n, p in problems_all)
        raise CheckpointError(f"no usable checkpoint in {workdir!r}: {listed}.")
    raise FileNotFoundError(f"No checkpoint in {workdir!r} (looked in "
                            f"{' and '.join(d + '/' for d in looked)}): train first with "
                            "experiments/train.py.")
