"""A deterministic, resumable, per-process-sharded batch loader built on ``grain``.

The loader defines one **global stream** of records, identical on every process:
epoch ``e`` is the permutation ``pi_e`` of ``range(N)`` drawn from ``numpy.random.default_rng(
[seed, e])`` (the identity when ``shuffle=False``), and the stream is the concatenation
``pi_0, pi_1, ...`` (``num_epochs`` of them, or without end when ``num_epochs=None``). Global batch
``t`` is the stream positions ``[t G, (t + 1) G)`` for the global batch size ``G``, and process
``p`` of ``P`` (``jax.process_index()`` / ``jax.process_count()``) receives the block
``[t G + p B, t G + (p + 1) B)`` with ``B = G / P``. Hence

* the global batches do not depend on the number of processes (1 host or a pod see the same data
  order for the same seed), and the processes' batches are disjoint;
* every epoch is shuffled differently, and batches run on across epoch boundaries;
* the loader's whole state is the index ``t`` of the next batch, a JSON-serialisable dict
  (:meth:`Loader.get_state`), from which :meth:`Loader.set_state` resumes exactly.

``grain`` supplies the iteration: ``grain.MapDataset.range(num_batches).map(fetch)`` turned into an
iterator with ``to_iter_dataset`` (optionally prefetching in threads), whose own checkpoint state
is stored inside ours. Batches are read with the source's vectorised ``get_batch`` when it has one
(all sources of :mod:`jaxflows.data.sources` do), which keeps tiny images (8x8 digits) cheap.

With ``drop_remainder=False`` and a finite ``num_epochs`` (evaluation over a whole split), the
stream is padded to a multiple of ``G``; padded records are zero images with ``mask`` False, so
every batch has the same shape (one compilation) and every process the same number of batches.
Every batch carries ``mask`` (bool ``[B]``), True for real records.

Labels are int32 ``[B]`` (a class per record) or ``[B, H, W]`` (label maps, e.g.
``cityscapes_256``): their shape per record is taken from the source's first record, and
padded records get zero labels of that shape.
"""

from __future__ import annotations

import collections
import math
import sys
import threading
from typing import Any

import grain
import numpy as np

from jaxflows.data import sources as sources_lib

__all__ = ["Loader", "make_loader"]

_STATE_VERSION = 1


class _BatchFetcher:
    """Maps the index of a local batch to the batch (picklable, thread-safe permutation cache)."""

    def __init__(self, source, *, num_records, global_batch_size, local_batch_size, process_index,
                 seed, shuffle, stream_length, image_shape, dtype=np.uint8, label_shape=()):
        self.source = source
        self.n = num_records
        self.global_batch_size = global_batch_size
        self.local_batch_size = local_batch_size
        self.process_index = process_index
        self.seed = seed
        self.shuffle = shuffle
        self.stream_length = stream_length  # None: infinite.
        self.image_shape = image_shape
        self.label_shape = tuple(label_shape)
        self.dtype = np.dtype(dtype)
        self._cache: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        self._lock = threading.Lock()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_cache"] = collections.OrderedDict()
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def permutation(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.n, dtype=np.int64)
        with self._lock:
            perm = self._cache.get(epoch)
            if perm is not None:
                return perm
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        with self._lock:
            self._cache[epoch] = perm
            while len(self._cache) > 2:
                self._cache.popitem(last=False)
        return perm

    def record_indices(self, batch_index: int) -> tuple[np.ndarray, np.ndarray]:
        """Record indices of local batch ``batch_index``, and the mask of its real records.

        The mask is False on the padding of a finite stream (``drop_remainder=False``).
        """
        start = batch_index * self.global_batch_size + self.process_index * self.local_batch_size
        positions = start + np.arange(self.local_batch_size, dtype=np.int64)
        mask = (np.ones(self.local_batch_size, bool) if self.stream_length is None
                else positions < self.stream_length)
        epochs, offsets = np.divmod(positions, self.n)
        records = np.zeros(self.local_batch_size, np.int64)
        for epoch in np.unique(epochs[mask]):
            where = mask & (epochs == epoch)
            records[where] = self.permutation(int(epoch))[offsets[where]]
        return records, mask

    def __call__(self, batch_index: int) -> dict[str, np.ndarray]:
        records, mask = self.record_indices(int(batch_index))
        if mask.all():
            batch = sources_lib._get_batch(self.source, records)
            image, label = batch["image"], batch["label"]
        else:
            image = np.zeros((self.local_batch_size, *self.image_shape), self.dtype)
            label = np.zeros((self.local_batch_size, *self.label_shape), np.int32)
            if mask.any():
                batch = sources_lib._get_batch(self.source, records[mask])
                image[mask], label[mask] = batch["image"], batch["label"]
        return {"image": np.asarray(image, self.dtype), "label": np.asarray(label, np.int32),
                "mask": mask}


class Loader:
    """Iterator of per-process batches with exact save/restore of its position.

    Batches are ``{"image": uint8 [B, H, W, C], "label": int32 [B], "mask": bool [B]}`` (see the
    module docstring for the order; a vector source's ``"image"`` is float32 ``[B, D]``, a
    label-map source's ``"label"`` int32 ``[B, H, W]``); built by :func:`make_loader`, which
    documents the arguments.

    Attributes:
      global_batch_size, local_batch_size (``B``), num_records, num_batches (``None`` if
      infinite), steps_per_epoch (global batches per pass over the data, ``N // G``).
    """

    def __init__(self, source, *, global_batch_size: int, seed: int, shuffle: bool = True,
                 num_epochs: int | None = None, drop_remainder: bool = True,
                 process_index: int | None = None, process_count: int | None = None,
                 num_threads: int | None = None, prefetch: int = 8, worker_count: int = 0):
        if not hasattr(source, "__len__") or not hasattr(source, "__getitem__"):
            raise ValueError(
                f"source: expected a random-access source with __len__ and __getitem__ (e.g. from "
                f"jaxflows.data.get_source), got {type(source).__name__}.")
        n = len(source)
        if n < 1:
            raise ValueError("source: expected at least one record, got an empty source.")
        if process_index is None or process_count is None:
            import jax
            process_index = jax.process_index() if process_index is None else process_index
            process_count = jax.process_count() if process_count is None else process_count
        if process_count < 1 or not 0 <= process_index < process_count:
            raise ValueError(
                f"process_index/process_count: expected 0 <= process_index < process_count, got "
                f"{process_index}/{process_count}.")
        if not isinstance(global_batch_size, (int, np.integer)) or global_batch_size < 1:
            raise ValueError(
                f"global_batch_size: expected a positive integer, got {global_batch_size!r}.")
        if global_batch_size % process_count:
            raise ValueError(
                f"global_batch_size: {global_batch_size} is not divisible by the number of "
                f"processes ({process_count}).")
        if num_epochs is not None and (not isinstance(num_epochs, (int, np.integer))
                                       or num_epochs < 1):
            raise ValueError(
                f"num_epochs: expected None (infinite) or a positive integer, got {num_epochs!r}.")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed: expected a non-negative integer, got {seed!r}.")
        stream = None if num_epochs is None else n * int(num_epochs)
        if stream is None:
            num_batches = None
        elif drop_remainder:
            num_batches = stream // global_batch_size
            if num_batches == 0:
                raise ValueError(
                    f"global_batch_size: {global_batch_size} exceeds the {stream} records of "
                    f"{num_epochs} epoch(s) with drop_remainder=True: the loader would be empty.")
        else:
            num_batches = math.ceil(stream / global_batch_size)
        record = source[0]
        first = np.asarray(record["image"])
        image_shape = tuple(first.shape)
        label_shape = tuple(np.shape(record.get("label", 0)))   # () or a label map's (H, W)
        # uint8 images; float32 vectors of tabular sources (jaxflows.data.tabular)
        dtype = np.float32 if np.issubdtype(first.dtype, np.floating) else np.uint8
        self.source = source
        self.global_batch_size = int(global_batch_size)
        self.local_batch_size = int(global_batch_size) // process_count
        self.process_index, self.process_count = int(process_index), int(process_count)
        self.num_records = n
        self.num_batches = num_batches
        self.steps_per_epoch = n // self.global_batch_size
        self.seed, self.shuffle, self.num_epochs = int(seed), bool(shuffle), num_epochs
        self.drop_remainder = bool(drop_remainder)
        self._fetch = _BatchFetcher(
            source, num_records=n, global_batch_size=self.global_batch_size,
            local_batch_size=self.local_batch_size, process_index=self.process_index,
            seed=self.seed, shuffle=self.shuffle, stream_length=stream, image_shape=image_shape,
            dtype=dtype, label_shape=label_shape)
        if num_threads is None:
            num_threads = 0 if isinstance(source, sources_lib.ArraySource) else 2
        read_options = grain.ReadOptions(num_threads=num_threads,
                                         prefetch_buffer_size=prefetch if num_threads else 0)
        length = sys.maxsize if num_batches is None else num_batches
        self._dataset = grain.MapDataset.range(length).map(self._fetch)
        iter_dataset = self._dataset.to_iter_dataset(read_options)
        if worker_count:
            if worker_count < 0:
                raise ValueError(
                    f"worker_count: expected a non-negative integer, got {worker_count}.")
            from absl import flags
            # grain's workers read absl flags (their defaults outside app.run).
            if not flags.FLAGS.is_parsed():
                flags.FLAGS.mark_as_parsed()
            iter_dataset = iter_dataset.mp_prefetch(
                grain.MultiprocessingOptions(num_workers=worker_count))
        self.worker_count = worker_count
        self._iter = iter(iter_dataset)

    def __iter__(self) -> "Loader":
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        return next(self._iter)

    def _fingerprint(self) -> dict[str, Any]:
        return {"num_records": self.num_records, "global_batch_size": self.global_batch_size,
                "seed": self.seed, "shuffle": self.shuffle, "num_epochs": self.num_epochs,
                "drop_remainder": self.drop_remainder}

    def get_state(self) -> dict[str, Any]:
        """JSON-serialisable position of the loader: restoring it resumes with the same batches.

        The state holds the index of the next global batch (process-independent) and the settings
        it is valid for; store it e.g. with orbax ``ocp.args.JsonSave(loader.get_state())``.
        """
        return {"version": _STATE_VERSION, "grain": self._iter.get_state(), **self._fingerprint()}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restores a position saved by :meth:`get_state` (possibly by another process count)."""
        if (not isinstance(state, dict) or state.get("version") != _STATE_VERSION
                or "grain" not in state):
            raise ValueError(f"state: expected a dict from Loader.get_state(), got {state!r}.")
        saved = {k: state.get(k) for k in self._fingerprint()}
        if saved != self._fingerprint():
            raise ValueError(
                f"state: saved for a loader with {saved}, which differs from this loader "
                f"{self._fingerprint()}; the data order would not resume exactly.")
        self._iter.set_state(state["grain"])

    def __repr__(self) -> str:
        return (f"Loader(num_records={self.num_records}, "
                f"global_batch_size={self.global_batch_size}, "
                f"local_batch_size={self.local_batch_size}, process={self.process_index}/"
                f"{self.process_count}, seed={self.seed}, num_batches={self.num_batches})")


def make_loader(source, *, global_batch_size: int, seed: int, shuffle: bool = True,
                num_epochs: int | None = None, drop_remainder: bool = True,
                process_index: int | None = None, process_count: int | None = None,
                num_threads: int | None = None, prefetch: int = 8, worker_count: int = 0) -> Loader:
    """A grain-based iterator of this process's share of each global batch.

    Args:
      source: random-access source (``len``, ``[i] -> {"image", "label"}``), e.g. from
        :func:`jaxflows.data.get_source` or an :class:`jaxflows.data.ArraySource`.
      global_batch_size: records per global batch, summed over all processes; must be divisible
        by the process count. Each process gets ``global_batch_size / process_count``.
      seed: seed of the per-epoch shuffles (the same on every process).
      shuffle: reshuffle every epoch (``False``: records in order, for evaluation).
      num_epochs: passes over the data, ``None`` (default) for an endless stream.
      drop_remainder: drop the last incomplete global batch of a finite stream; if ``False`` it is
        padded (``mask`` False on padding) so that all batches have the same shape.
      process_index: this process's index, default ``jax.process_index()`` (given explicitly
        in tests to emulate several hosts).
      process_count: the number of processes, default ``jax.process_count()``.
      num_threads: grain prefetch threads (default 0 for in-memory arrays, 2 for file-backed
        sources).
      prefetch: batches buffered when threads are used.
      worker_count: grain worker processes (``mp_prefetch``) that assemble batches, for sources
        whose records are expensive to decode (celeb_a's crop and resize); 0 (default) assembles
        them in this process, which is fastest for small images. The source must be picklable.

    Returns:
      A :class:`Loader`: ``next(loader)`` gives ``{"image": uint8 [B, H, W, C], "label": int32 [B],
      "mask": bool [B]}`` (``"label"`` int32 ``[B, H, W]`` for label maps);
      ``get_state()`` / ``set_state(state)`` save and restore its position.
    """
    return Loader(source, global_batch_size=global_batch_size, seed=seed, shuffle=shuffle,
                  num_epochs=num_epochs, drop_remainder=drop_remainder, process_index=process_index,
                  process_count=process_count, num_threads=num_threads, prefetch=prefetch,
                  worker_count=worker_count)
