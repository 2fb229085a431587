"""A training workdir's files: ``config.json``, ``metrics.jsonl``, the checkpoint folders.

    workdir/
      config.json       the run's config (written atomically); the resume check reads it
      metrics.jsonl     one JSON row per epoch (train_* means, val_* at evaluations)
      checkpoints/      the newest checkpoints (``LATEST_DIR``), Orbax, by epoch
      best/             the checkpoint of the best validation score (``BEST_DIR``)
      figures/          the trainer's figures, rewritten at every evaluation (``vae_jax.summaries``)
      tensorboard/      TensorBoard event files: the metrics and the figures (``vae_jax.summaries``)
      .lock             held by the run training in it: pid, host, start time (``vae_jax.lock``)
      loss.json         which loss function trained it ("module:name"); a resume with another is refused

Every write either completes or leaves the old file: a kill never leaves half a
``config.json``, and a metrics line cut short by a kill is dropped on resume.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

LATEST_DIR = "checkpoints"
# The checkpoint of the epoch with the best validation score, kept beside the latest ones:
# what early stopping on the validation set would keep.
BEST_DIR = "best"
CHECKPOINTS = ("latest", "best")
METRICS = "metrics.jsonl"
LOSS = "loss.json"


class WorkdirError(OSError):
  """The workdir cannot be created or written."""


def prepare(workdir: str | Path) -> Path:
  """Creates ``workdir`` and checks that it can be written, before any compute."""
  workdir = Path(workdir)
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    probe = workdir / f".write_probe.{os.getpid()}"
    probe.write_text("")
    probe.unlink()
  except OSError as e:
    raise WorkdirError(f"workdir {workdir} cannot be {'written' if workdir.is_dir() else 'created'}: "
                       f"{e.strerror or e}. Choose a writable --workdir.") from e
  return workdir


def checkpoint_dir(workdir: str | Path, checkpoint: str = "latest") -> Path:
  if checkpoint not in CHECKPOINTS:
    raise ValueError(f"checkpoint={checkpoint!r}; expected one of {CHECKPOINTS}")
  return Path(workdir) / (LATEST_DIR if checkpoint == "latest" else BEST_DIR)


def write_atomic(path: Path, text: str) -> None:
  """Write a whole file or nothing: a kill mid-write leaves the old file."""
  tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
  tmp.write_text(text)
  os.replace(tmp, path)


def write_config(config, workdir: Path) -> None:
  write_atomic(Path(workdir) / "config.json", config.to_json(indent=2))


def append_jsonl(path: Path, row: dict) -> None:
  with path.open("a") as f:
    f.write(json.dumps(row) + "\n")


def read_metrics(workdir: str | Path) -> list[dict]:
  path = Path(workdir) / METRICS
  if not path.exists():
    return []
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_metrics(path: Path, last_epoch: int) -> None:
  """Drop rows of epochs after the checkpoint we resume from (they will be redone).

  A line cut short by a kill mid-append is dropped too.
  """
  if not path.exists():
    return
  kept = []
  for r in path.read_text().splitlines():
    try:
      if r.strip() and json.loads(r).get("epoch", 0) <= last_epoch:
        kept.append(r)
    except json.JSONDecodeError:
      log.warning("dropping a partly written line of %s: %r", path, r[:80])
  write_atomic(path, "".join(r + "\n" for r in kept))


def best_score(metrics_path: Path, best_epochs: list[int], metric: str) -> float | None:
  """The ``metric`` of the checkpoint in ``BEST_DIR``, read back from the metrics (None if none)."""
  if not best_epochs or not metrics_path.exists():
    return None
  for line in metrics_path.read_text().splitlines():
    try:
      row = json.loads(line)
    except json.JSONDecodeError:
      continue
    if row.get("epoch") == best_epochs[-1] and row.get(metric) is not None:
      return float(row[metric])
  return None


def _trained(workdir: Path) -> bool:
  latest = workdir / LATEST_DIR
  return (latest.is_dir() and any(latest.iterdir())) or bool(read_metrics(workdir))


def check_loss(workdir: str | Path, name: str, *, write: bool = True) -> None:
  """Records which loss function (``name``, "module:qualname") trains ``workdir``; refuses a
  workdir that holds epochs trained with another one (its ``metrics.jsonl`` would mix two
  objectives). A workdir with no epochs yet takes the new loss."""
  workdir = Path(workdir)
  path = workdir / LOSS
  if path.exists():
    recorded = json.loads(path.read_text()).get("loss")
    if recorded != name and _trained(workdir):
      raise WorkdirError(f"{workdir} was trained with the loss {recorded}, not {name}: resuming it "
                         "with another loss would mix two objectives in one run. Pass the same "
                         "loss_fn, or train in a new workdir.")
    if recorded == name:
      return
  elif _trained(workdir):
    log.warning("%s records no loss (written before losses were recorded); recording %s",
                workdir, name)
  if write:
    write_atomic(path, json.dumps({"loss": name}, indent=2))
