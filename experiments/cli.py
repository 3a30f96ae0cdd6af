"""What the launchers (train.py, evaluate.py, sample.py) share: flags, logging, refusals.

Exit codes of every launcher:

====  ==================================================================================
0     done.
1     the run failed: it diverged (too many non-finite steps in a row, a non-finite
      final figure, more skipped steps than ``config.optim.max_skipped_fraction``).
2     refused: a bad flag, config key or value, a work directory that is a file or
      not writable, a missing or damaged checkpoint, data that is not prepared; or an
      operating-system error while writing (disk full). Nothing to retry as is.
130   interrupted by Ctrl-C (SIGINT); rerun the same command to resume.
143   interrupted by SIGTERM; rerun the same command to resume.
====  ==================================================================================

A refusal or failure prints one line ``error: ...`` to stderr that names the flag,
config key or path and what to do, and no traceback (``--debug`` prints the traceback
too). Errors that are not the user's (bugs) still raise with their traceback.

Each launcher keeps its flags in its own ``absl.flags.FlagValues`` (``FLAGS`` of the
module), so that the three can be imported and their ``main(argv)`` called in one
Python process (tests, notebooks); a flag defined with plain ``flags.DEFINE_*`` (on
absl's global ``flags.FLAGS``) in a launcher module is picked up as well.
"""
from __future__ import annotations

import logging
import os
import sys
import traceback
from typing import Callable, List, Optional, Sequence

from absl import flags

__all__ = ["RefusalError", "run", "parse", "write_text_atomic", "parse_seeds", "run_labels",
           "EXIT_FAILED", "EXIT_REFUSED", "EXIT_SIGINT", "EXIT_SIGTERM"]

EXIT_FAILED, EXIT_REFUSED, EXIT_SIGINT, EXIT_SIGTERM = 1, 2, 130, 143
_HELP = ("-h", "--help", "--helpshort", "--helpfull")


def write_text_atomic(path: str, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary file and ``os.replace``, so that a
    reader (or a concurrent process writing the same report) never sees half a file.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def parse_seeds(text: str, error: Callable[[str], None], *, at_least: int = 1) -> list:
    """The distinct integer seeds of the comma-separated ``text``; ``error(message)`` (an
    ``argparse`` parser's ``error``) on anything else or fewer than ``at_least``.
    """
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        error(f"--seeds must be comma-separated integers, got {text!r}")
    if len(seeds) < at_least or len(set(seeds)) != len(seeds):
        error(f"--seeds needs at least {at_least} distinct seed{'s' if at_least > 1 else ''}, "
              f"got {text!r}")
    return seeds


class RefusalError(Exception):
    """Bad input to a launcher: printed as one ``error:`` line, exit code 2."""


def run_labels(workdirs: Sequence[str], labels: Optional[Sequence[str]], *,
               flag: str = "--workdirs") -> List[str]:
    """One name per work directory: ``labels`` (``--labels``), or each directory's basename.

    Raises :class:`RefusalError` on an empty work directory entry or a label count that
    does not match.
    """
    if any(not w.strip() for w in workdirs):
        raise RefusalError(f"{flag}: an empty entry in {','.join(workdirs)!r} "
                           "(expected comma-separated work directories).")
    if labels is None:
        return [os.path.basename(os.path.normpath(w)) for w in workdirs]
    if len(labels) != len(workdirs):
        raise RefusalError(f"--labels: {len(labels)} labels {list(labels)} for "
                           f"{len(workdirs)} work directories: give one label per "
                           f"{flag} entry, in the same order.")
    return [label.strip() for label in labels]


def _adopt_global_flags(flag_values: flags.FlagValues, module: str):
    """Flags a launcher module defined on absl's global FLAGS join ``flag_values``."""
    by_module = flags.FLAGS.flags_by_module_dict()
    for key in {module, "__main__", sys.argv[0] if sys.argv else ""}:
        for flag in by_module.get(key, []):
            if flag.name not in flag_values:
                flag_values[flag.name] = flag


def _missing_config_parent(argv: Sequence[str], key: str) -> str:
    """The refusal of an override ``--config.a.<key>.b=v`` whose ``<key>`` does not exist."""
    for arg in argv:
        name, _, value = arg.partition("=")
        parts = name.split(".")
        if name.startswith("--config.") and key in parts[:-1]:
            whole = ".".join(parts[:parts.index(key) + 1])
            inner = ".".join(parts[parts.index(key) + 1:])
            return (f"{name}: the config has no field {key!r} to set a field of; set the "
                    f"whole dict instead: {whole}=\"{{'{inner}': {value or '...'}}}\".")
    return f"--config: no config field {key!r} (see --help)."


def parse(argv: Sequence[str], flag_values: flags.FlagValues, *, module: str,
          config_file: bool = False, required: Sequence[str] = ()) -> list:
    """Parse ``argv`` into ``flag_values`` afresh; returns the remaining arguments.

    With ``config_file``, (re)defines ``--config`` (an ``ml_collections`` config file
    with ``--config.<key>=<value>`` overrides). Overrides may name a key the file does
    not set, e.g. a residual flow's solver settings as a whole dict,
    ``--config.model.solver="{'max_iter': 200}"``: unknown keys are refused by the
    trainer's settings (naming them), not by the flag parser.

    Raises:
      RefusalError: a bad flag or value, or a missing required flag.
    """
    from ml_collections import config_flags

    _adopt_global_flags(flag_values, module)
    if config_file:
        for name in list(flag_values):
            if name == "config" or name.startswith("config."):
                delattr(flag_values, name)
        config_flags.DEFINE_config_file(
            "config", None, "Training configuration file (path[:variant]); override "
            "fields with --config.<key>=<value>.", flag_values=flag_values,
            lock_config=False, accept_new_attributes=True, sys_argv=list(argv))
    flag_values.unparse_flags()
    try:
        rest = flag_values(list(argv))
    except flags.Error as e:
        message = str(e).strip().splitlines()[0]
        if "Unknown command line flag" in message:
            name = message.split("'")[1] if "'" in message else message
            raise RefusalError(f"unknown flag --{name}; see --help for the flags of this "
                          "launcher.") from e
        raise RefusalError(f"{message} (see --help).") from e
    except KeyError as e:   # an override below a config key that does not exist
        raise RefusalError(_missing_config_parent(argv, str(e).strip("'\""))) from e
    for name in required:
        if flag_values[name].value is None:
            raise RefusalError(f"--{name} is required (see --help).")
    if len(rest) > 1:
        raise RefusalError(f"unexpected arguments {rest[1:]}: flags take the form --name=value.")
    flags.FLAGS.mark_as_parsed()   # absl logging: no "before flag parsing" warning
    return rest


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


def _classify(error: BaseException):
    """``(exit code, message)`` of an error that is the user's to fix, else None."""
    if isinstance(error, (RefusalError, ValueError, FileNotFoundError)):
        return EXIT_REFUSED, _one_line(error)
    if isinstance(error, FloatingPointError):
        return EXIT_FAILED, _one_line(error)
    if isinstance(error, OSError):
        where = f" ({error.filename})" if getattr(error, "filename", None) else ""
        return EXIT_REFUSED, (f"{error.strerror or _one_line(error)}{where}: check the free "
                              "space and permissions of the work directory, or pass "
                              "another --workdir.")
    return None


# orbax's warnings about the read-only managers that restore checkpoints: by design here.
_BENIGN = ("CheckpointManagerOptions.read_only=True", "Given directory is read only")


def _not_benign(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(_BENIGN)


def _setup_logging():
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.WARNING)   # orbax is chatty at INFO
    absl_logger = logging.getLogger("absl")
    if _not_benign not in absl_logger.filters:
        absl_logger.addFilter(_not_benign)
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.WARNING)
    logging.getLogger("jaxflows.train").setLevel(logging.INFO)


def run(body: Callable[[], Optional[int]], argv: Optional[Sequence[str]],
        flag_values: flags.FlagValues, *, module: str, doc: str = "",
        config_file: bool = False, required: Sequence[str] = ()) -> int:
    """Parse ``argv``, run ``body()`` and turn user errors into an exit code.

    Returns ``body()``'s exit code (0 if it returns None), or the code of the error
    (module docstring) after printing one ``error:`` line to stderr; with ``--debug``
    in ``argv`` the traceback is printed first. ``KeyboardInterrupt`` (Ctrl-C outside
    the training loop, or a second Ctrl-C in it) prints one line and returns 130.
    """
    argv = list(sys.argv if argv is None else argv)
    if any(a in _HELP for a in argv[1:]):
        _adopt_global_flags(flag_values, module)
        print(doc.strip() + "\n\nFlags:\n" + flag_values.get_help(), flush=True)
        return 0
    debug = any(a in ("--debug", "--debug=true", "--debug=True", "--debug=1")
                for a in argv[1:])
    try:
        parse(argv, flag_values, module=module, config_file=config_file, required=required)
        _setup_logging()
        code = body()
        return 0 if code is None else int(code)
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print("interrupted by Ctrl-C: work since the last checkpoint is lost; rerun the "
              "same command to resume from it.", file=sys.stderr, flush=True)
        return EXIT_SIGINT
    except Exception as e:  # noqa: BLE001 - classified below, re-raised if not the user's
        classified = _classify(e)
        if classified is None:
            raise
        if debug:
            traceback.print_exc()
        code, message = classified
        print(f"error: {message}", file=sys.stderr, flush=True)
        return code
