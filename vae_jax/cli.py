"""What every command (``vae-jax COMMAND``) shares: config lookup, override checks, named errors, Ctrl-C.

``check_argv(schema)`` (before the config flag is defined) and ``run(main)``
(instead of ``absl.app.run(main)``) give every command:

* ``--config NAME`` for a packaged config (``vae_jax/configs/NAME.py``) from any
  directory, a path otherwise; a config that exists nowhere is a named error;

* every ``--config.FIELD=VALUE`` override checked against the command's
  schema before anything else, so a misspelled field, top-level or nested, gets
  the same named error ("config.learnig_rate is not a known field; did you mean
  config.optimizer.learning_rate?") instead of a traceback from the flag parser;
* the library's named errors (bad configs, data, workdirs, checkpoints, a
  diverged run) print one line and exit with status 2; ``--verbose`` shows the
  traceback too;
* ``define_distributed_flags()`` and ``initialize_distributed()`` give a training
  command the flags of a multi-process run (``--coordinator_address``,
  ``--num_processes``, ``--process_id``, ``--distributed_timeout``);
* Ctrl-C ends a training run with one line saying where it resumes (status 130):
  the checkpoints written so far are complete (``vae_jax.checkpointing``).
"""

from __future__ import annotations

import difflib
import logging
import sys
import traceback
from pathlib import Path
from typing import Callable

from absl import app, flags

from vae_jax import checkpointing
from vae_jax import configs
from vae_jax import data as data_lib
from vae_jax import loop
from vae_jax import parallel
from vae_jax import schema as schema_lib
from vae_jax import workdir as workdir_lib

NAMED_ERRORS = (schema_lib.ConfigError, data_lib.DataError, workdir_lib.WorkdirError,
                checkpointing.CheckpointError, loop.NonFiniteError, parallel.DistributedError,
                FileNotFoundError)


# The module ``vae-jax COMMAND`` imports to run (``vae_jax.commands``); ``None`` otherwise.
ENTRY: str | None = None


def is_entry(module_name: str) -> bool:
  """Whether ``module_name`` is the command being run (as ``__main__`` or through ``vae-jax``)."""
  return module_name == "__main__" or module_name == ENTRY


def resolve_config_flag(argv: list[str]) -> list[str]:
  """``argv`` with a ``--config`` value that names a packaged config replaced by its path;
  ConfigError when the value is neither a file nor a packaged config."""
  out = list(argv)
  for i, arg in enumerate(out):
    if arg.startswith("--config="):
      value, prefix, at = arg.split("=", 1)[1], "--config=", i
    elif arg == "--config" and i + 1 < len(out):
      value, prefix, at = out[i + 1], "", i + 1
    else:
      continue
    resolved = configs.resolve(value)
    if not Path(resolved.partition(":")[0]).exists():
      raise schema_lib.ConfigError(f"--config {value}: no such file and no packaged config of that "
                                   f"name (packaged: {', '.join(configs.names())})")
    out[at] = prefix + resolved
  return out


def override_names(argv: list[str]) -> list[str]:
  """The dotted field names of the ``--config.NAME[=VALUE]`` arguments in ``argv``."""
  names = []
  for arg in argv[1:]:
    if arg.startswith("--config."):
      names.append(arg[len("--config."):].split("=", 1)[0])
  return names


def check_overrides(argv: list[str], config_schema: schema_lib.Schema) -> None:
  """ConfigError for the first override that names no field of ``config_schema``."""
  for name in override_names(argv):
    if name in config_schema.fields:
      continue
    if any(f.startswith(name + ".") for f in config_schema.fields):
      schema_lib.fail(name, "<override>", "a section of fields: override one of its fields")
    close = difflib.get_close_matches(name, config_schema.fields, n=1)
    raise schema_lib.ConfigError(f"config.{name} is not a known field"
                                 + (f"; did you mean config.{close[0]}?" if close else "")
                                 + f" (see {config_schema.example})")


def _flag_value(argv: list[str], flag: str) -> str | None:
  for i, arg in enumerate(argv):
    if arg.startswith(flag + "="):
      return arg.split("=", 1)[1]
    if arg == flag and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _fail(e: BaseException, verbose: bool) -> None:
  if verbose:
    traceback.print_exception(e)
  print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
  sys.exit(2)


def check_argv(config_schema: schema_lib.Schema) -> None:
  """``check_overrides`` on ``sys.argv``, exiting with the one-line error. Call it before the
  config flag is defined: ml_collections reads the overrides when the flag is defined."""
  try:
    sys.argv[:] = resolve_config_flag(sys.argv)
    check_overrides(sys.argv, config_schema)
  except schema_lib.ConfigError as e:
    _fail(e, "--verbose" in sys.argv)


def run(main: Callable) -> None:
  """``app.run(main)`` with one-line named errors and a clean Ctrl-C."""
  argv = sys.argv
  verbose = "--verbose" in argv
  if verbose:
    argv = sys.argv = [a for a in argv if a != "--verbose"]
  try:
    app.run(main)
  except KeyboardInterrupt:
    workdir = _flag_value(argv, "--workdir")
    where = f" in {workdir}" if workdir else ""
    print(f"interrupted: the checkpoints written so far{where} are kept; rerun the same command "
          "to resume", file=sys.stderr)
    sys.exit(130)
  except NAMED_ERRORS as e:
    _fail(e, verbose)


def define_distributed_flags() -> None:
  """The flags of a run over several processes (hosts); see ``initialize_distributed``."""
  flags.DEFINE_string("coordinator_address", "", "Several processes: HOST:PORT of process 0, the same "
                      "on every process (jax.distributed.initialize); empty for one process.")
  flags.DEFINE_integer("num_processes", 1, "Several processes: how many, the same on every process.")
  flags.DEFINE_integer("process_id", 0, "Several processes: this process's index, 0 on the host that "
                       "runs the coordinator and writes the workdir.")
  flags.DEFINE_integer("distributed_timeout", 300, "Several processes: seconds to wait for all of "
                       "them to start; a process that dies takes the others down within this time.")


def initialize_distributed() -> None:
  """``parallel.initialize_distributed`` from the flags of ``define_distributed_flags``."""
  f = flags.FLAGS
  parallel.initialize_distributed(f.coordinator_address, f.num_processes, f.process_id,
                                  timeout_s=f.distributed_timeout)


def quiet_logs() -> None:
  """Orbax logs every save at INFO: keep absl at WARNING, the library at INFO."""
  logging.getLogger("absl").setLevel(logging.WARNING)
  logging.getLogger("vae_jax").setLevel(logging.INFO)
