"""Training on several processes (hosts): start-up with checks, and config agreement.

The trainer has one code path for one CPU, eight GPUs or a TPU pod
(:mod:`jaxflows.train.mesh`): the mesh spans ``jax.devices()``, every device of every
process, and each process feeds only its own rows of every global batch
(:mod:`jaxflows.data.loader`; the global batches do not depend on the process count).
What a multi-process run needs besides is done here and in the loop:

* :func:`initialize` wraps ``jax.distributed.initialize`` with checks of its arguments
  and clear errors (a coordinator address that is not ``host:port``, a process count or
  id that does not fit, a coordinator that cannot be reached in time, a call after JAX
  already started its backend);
* :func:`check_same_config` (called by :func:`~jaxflows.train.run.prepare_run` whenever
  ``jax.process_count() > 1``) compares a hash of every config field across the
  processes with one tiny all-gather, and raises on every process, naming the fields
  and processes that disagree, instead of training a silently inconsistent model;
* data-dependent initialisation (ActNorm) is computed by one jitted function on the
  global batch (:func:`~jaxflows.train.run.init_state`), so the parameters are the same
  on every process by construction; checkpoints are written collectively through orbax
  (each process its shards; parameters are replicated, so process 0 writes them) and
  their manifest (``SHA256SUMS``) by process 0 only; every process restores them;
  ``metrics.jsonl``, ``curves.png``, sample grids, ``results.json`` and the progress
  bar are written by process 0 only.

Launching (see the README, "Several hosts"): run the same command on every host with
the coordinator's address, the process count and each process's id, as arguments of
:func:`initialize` or in the environment (``JAX_COORDINATOR_ADDRESS``,
``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``); on a TPU pod slice or a SLURM/Open MPI
cluster all three may be left out (JAX detects them).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from typing import Any, Dict, List, Optional, Sequence

import jax
import numpy as np

__all__ = ["initialize", "check_same_config", "config_field_hashes", "describe_processes"]

_ADDRESS = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+):([0-9]+)$")

# Fields that may legitimately differ between hosts (local paths, cosmetics).
_HOST_LOCAL = ("dataset.data_dir", "progress_bar")


def _env_int(name: str) -> Optional[int]:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r}: expected an integer."
                         ) from None


def _check_args(coordinator_address, num_processes, process_id):
    if coordinator_address is not None:
        match = _ADDRESS.match(str(coordinator_address))
        if not match or not 1 <= int(match.group(2)) <= 65535:
            raise ValueError(
                f"coordinator_address={coordinator_address!r}: expected 'host:port' (the "
                "address of process 0, reachable from every process, and a free TCP port "
                "in 1..65535), e.g. '10.0.0.1:1234'.")
    if num_processes is not None and (isinstance(num_processes, bool)
                                      or not isinstance(num_processes, (int, np.integer))
                                      or num_processes < 1):
        raise ValueError(f"num_processes={num_processes!r}: expected an integer >= 1 (the "
                         "number of processes started, one per host).")
    if process_id is not None:
        if (isinstance(process_id, bool) or not isinstance(process_id, (int, np.integer))
                or process_id < 0):
            raise ValueError(f"process_id={process_id!r}: expected an integer >= 0.")
        if num_processes is not None and process_id >= num_processes:
            raise ValueError(f"process_id={process_id} does not fit num_processes="
                             f"{num_processes}: expected 0 <= process_id < num_processes "
                             "(each process gets a distinct id).")
    given = [v is None for v in (coordinator_address, num_processes, process_id)]
    if any(given) and not all(given):
        missing = [n for n, v in zip(("coordinator_address", "num_processes", "process_id"),
                                     (coordinator_address, num_processes, process_id))
                   if v is None]
        # JAX may still detect them (TPU pod, SLURM, Open MPI): only say what is missing
        return missing
    return []


_HELLO = b"JAXFLOWS-PREFLIGHT-1"


def _split_address(address: str):
    host, port = address.rsplit(":", 1)
    return host.strip("[]"), int(port)


def _recv_line(conn, limit: int = 4096) -> bytes:
    data = b""
    while not data.endswith(b"\n") and len(data) < limit:
        chunk = conn.recv(limit)
        if not chunk:
            break
        data += chunk
    return data.strip()


def _preflight_coordinator(address: str, num_processes: int, timeout: float) -> None:
    """Process 0: wait for the other processes' hello on the coordinator port; check them.

    Every other process connects and sends ``(process_id, num_processes)``. When all
    ``num_processes - 1`` have arrived with distinct ids and the same count, each gets
    ``OK`` and the port is released for JAX's coordination service (which the processes
    then connect to, retrying until it is up). Otherwise every connected process gets
    the error, and so does this one.
    """
    import socket
    import time
    _, port = _split_address(address)
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        server.bind(("", port))
    except OSError as e:
        server.close()
        raise RuntimeError(
            f"process 0 cannot listen on port {port} of coordinator_address={address!r} "
            f"({e.strerror or e}): choose a free port; process 0 must run on the "
            "coordinator's host.") from e
    server.listen(max(num_processes, 1))
    deadline = time.monotonic() + timeout
    peers, conns, problems = set(), [], []
    try:
        while len(peers) < num_processes - 1 and not problems:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            server.settimeout(left)
            try:
                conn, _ = server.accept()
            except socket.timeout:
                break
            conn.settimeout(max(deadline - time.monotonic(), 1.0))
            try:
                fields = _recv_line(conn).split()
            except OSError:
                conn.close()
                continue
            if len(fields) != 3 or fields[0] != _HELLO:
                conn.close()
                continue
            pid, count = int(fields[1]), int(fields[2])
            if count != num_processes:
                problems.append(f"process {pid} was started with num_processes={count}, "
                                f"process 0 with {num_processes}")
            elif pid == 0 or pid in peers:
                problems.append(f"two processes were started with process_id={pid}")
            conns.append(conn)
            peers.add(pid)
        if not problems and len(peers) < num_processes - 1:
            missing = sorted(set(range(1, num_processes)) - set(peers))
            problems.append(
                f"only {len(peers) + 1} of num_processes={num_processes} processes connected "
                f"to {address} within {timeout:g} s (missing process_id(s) {missing}): start "
                f"exactly {num_processes} processes with distinct process_id and the same "
                "coordinator_address, or lower num_processes")
        reply = b"OK\n" if not problems else ("ERR " + "; ".join(problems) + "\n").encode()
        for conn in conns:
            try:
                conn.sendall(reply)
            except OSError:
                pass
            conn.close()
    finally:
        server.close()
    if problems:
        raise RuntimeError(f"process 0 of {num_processes}: " + "; ".join(problems) + ".")


def _preflight_client(address: str, num_processes: int, process_id: int,
                      timeout: float) -> None:
    """A process other than 0: hello to process 0 on the coordinator port; await its verdict."""
    import socket
    import time
    host, port = _split_address(address)
    deadline = time.monotonic() + timeout
    last = None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise RuntimeError(
                f"process {process_id} of {num_processes}: cannot reach the coordinator at "
                f"coordinator_address={address!r} within {timeout:g} s ({last}): check the "
                "host and port (those of process 0, which must be started too), and that "
                "every host can reach it.")
        try:
            conn = socket.create_connection((host, port), timeout=min(left, 5.0))
            break
        except OSError as e:
            last = e.strerror or str(e)
            time.sleep(0.2)
    try:
        conn.settimeout(max(deadline - time.monotonic(), 1.0))
        conn.sendall(b"%s %d %d\n" % (_HELLO, process_id, num_processes))
        reply = _recv_line(conn).decode(errors="replace")
    except OSError as e:
        reply = f"ERR no answer from process 0 ({e.strerror or e})"
    finally:
        conn.close()
    if reply != "OK":
        why = reply[4:] if reply.startswith("ERR ") else (
            f"the coordinator port answered {reply[:80]!r}, not jaxflows' pre-flight check "
            "(is another program using it, or did the other processes start long before?)")
        raise RuntimeError(f"process {process_id} of {num_processes}: {why}.")


def initialize(coordinator_address: Optional[str] = None,
               num_processes: Optional[int] = None, process_id: Optional[int] = None, *,
               local_device_ids: Optional[Sequence[int]] = None,
               initialization_timeout: int = 300, preflight: bool = True) -> None:
    """``jax.distributed.initialize`` with its arguments checked and its failures explained.

    Call it first, before anything touches a JAX device. Arguments not given are read
    from ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``; if
    they are still unset, JAX detects them on a TPU pod slice, under SLURM or Open MPI.

    Args:
      coordinator_address: ``"host:port"`` of process 0 (which binds the port),
        reachable from every process.
      num_processes: the number of processes (usually one per host).
      process_id: this process's id, ``0 <= process_id < num_processes``.
      local_device_ids: the local devices this process uses (default: all).
      initialization_timeout: seconds to wait for every process to connect.
      preflight: when the address, count and id are all known (given or from the
        environment), check them first with a plain TCP handshake on the coordinator's
        port (process 0 listens, the others say their id and count), so that a wrong
        address, a missing process, a duplicate id or a disagreeing count is a Python
        exception on every process that can tell. (JAX itself aborts the whole process
        with ``DEADLINE_EXCEEDED`` when the processes do not all connect in time.)

    Raises:
      ValueError: a malformed address, a process count < 1, a process id that does not
        fit, or a non-integer ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID``.
      RuntimeError: JAX's backend is already running (call this first), the processes
        did not all connect within ``initialization_timeout`` (wrong address or port,
        fewer processes started than ``num_processes``, a firewall), or JAX reports
        another process count than ``num_processes``.
    """
    if coordinator_address is None:
        coordinator_address = os.environ.get("JAX_COORDINATOR_ADDRESS") or None
    if num_processes is None:
        num_processes = _env_int("JAX_NUM_PROCESSES")
    if process_id is None:
        process_id = _env_int("JAX_PROCESS_ID")
    missing = _check_args(coordinator_address, num_processes, process_id)
    from jax._src import xla_bridge
    if xla_bridge.backends_are_initialized():
        raise RuntimeError(
            "jaxflows.train.distributed.initialize must run before anything uses a JAX "
            "device (jax.devices(), a computation, ...): call it first thing in the "
            "program, right after the imports.")
    where = (f"process {process_id} of {num_processes}, coordinator "
             f"{coordinator_address}")
    if preflight and not missing and coordinator_address is not None:
        if process_id == 0:
            _preflight_coordinator(coordinator_address, num_processes,
                                   initialization_timeout)
        else:
            _preflight_client(coordinator_address, num_processes, process_id,
                              initialization_timeout)
    try:
        jax.distributed.initialize(coordinator_address=coordinator_address,
                                   num_processes=num_processes, process_id=process_id,
                                   local_device_ids=local_device_ids,
                                   initialization_timeout=initialization_timeout)
    except ValueError as e:
        hint = (f" ({', '.join(missing)} not given and not detected from the cluster "
                "environment: pass them, or set JAX_COORDINATOR_ADDRESS, "
                "JAX_NUM_PROCESSES and JAX_PROCESS_ID)") if missing else ""
        raise ValueError(f"jax.distributed.initialize ({where}): {e}{hint}") from e
    except Exception as e:    # XlaRuntimeError (a RuntimeError): DEADLINE_EXCEEDED, ...
        if "only be called once" in str(e):
            raise RuntimeError("jax.distributed is already initialized in this process: "
                               "call initialize once.") from e
        first = (str(e).strip().splitlines() or [""])[0][:400]
        raise RuntimeError(
            f"{where}: the processes did not all connect within {initialization_timeout} s "
            f"({type(e).__name__}: {first}). Check that exactly num_processes processes "
            "were started, each with a distinct process_id, all with the same "
            "coordinator_address, that process 0 runs on that host and the port is free "
            "there and reachable from every host.") from e
    if num_processes is not None and jax.process_count() != num_processes:
        raise RuntimeError(f"{where}: JAX reports {jax.process_count()} processes, but "
                           f"num_processes={num_processes} was asked for.")


def describe_processes() -> str:
    """One line: processes, devices per process and in all, and the platform."""
    return (f"process {jax.process_index()} of {jax.process_count()}: "
            f"{jax.local_device_count()} local of {jax.device_count()} "
            f"{jax.devices()[0].platform} device(s)")


def _json(value) -> str:
    return json.dumps(value, sort_keys=True, default=repr)


def config_field_hashes(settings) -> Dict[str, int]:
    """``{field: 32-bit hash of its value}`` for every field of a run's settings.

    Fields are the config keys, one level deep for ``dataset`` and ``optim`` (e.g.
    ``"dataset.train_split"``); ``model`` is one field (its name and keyword
    arguments). Host-local fields (``dataset.data_dir``, ``progress_bar``) are left out.
    ``settings`` is a :class:`~jaxflows.train.settings.RunSettings` or a ConfigDict.
    """
    from jaxflows.train.settings import as_settings
    settings = as_settings(settings)
    values: Dict[str, Any] = {}
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if field.name == "model":
            values["model"] = value.to_dict()
            if getattr(value, "hybrid", None) is not None:     # config.hybrid
                values["hybrid"] = dataclasses.asdict(value.hybrid)
        elif dataclasses.is_dataclass(value):
            for sub in dataclasses.fields(value):
                values[f"{field.name}.{sub.name}"] = getattr(value, sub.name)
        else:
            values[field.name] = value
    return {k: int.from_bytes(hashlib.sha256(_json(v).encode()).digest()[:4], "little")
            for k, v in sorted(values.items()) if k not in _HOST_LOCAL}


def check_same_config(settings, *, gathered: Optional[np.ndarray] = None) -> None:
    """Raise ``ValueError`` on every process unless all processes run the same config.

    One all-gather of :func:`config_field_hashes` (a few hundred bytes) across the
    processes; a no-op with one process.

    Args:
      settings: this process's :class:`~jaxflows.train.settings.RunSettings` (or
        ConfigDict).
      gathered: for tests: the ``[processes, fields]`` uint32 hashes as gathered
        (default: gathered with ``multihost_utils.process_allgather``).

    Raises:
      ValueError: naming the fields that differ and which processes differ from
        process 0 (the values themselves stay on their hosts: compare the
        ``config.json`` or command lines of the processes named).
    """
    hashes = config_field_hashes(settings)
    names = list(hashes)
    mine = np.asarray([hashes[n] for n in names], np.uint32)
    if gathered is None:
        if jax.process_count() == 1:
            return
        from jax.experimental import multihost_utils
        # the field list is fixed by RunSettings, so the arrays have the same shape
        gathered = np.asarray(multihost_utils.process_allgather(mine))
    gathered = np.asarray(gathered, np.uint32).reshape(-1, len(names))
    differ = gathered != gathered[0:1]
    if not differ.any():
        return
    fields: List[str] = [names[j] for j in np.nonzero(differ.any(axis=0))[0]]
    procs = [int(p) for p in np.nonzero(differ.any(axis=1))[0]]
    raise ValueError(
        f"the {gathered.shape[0]} processes do not run the same config: "
        f"{', '.join('config.' + f for f in fields)} differ between process 0 and "
        f"process(es) {procs}. Start every process with the same config file and "
        "--config overrides (only dataset.data_dir and progress_bar may differ).")
