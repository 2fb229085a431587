"""What a training run reports beside ``metrics.jsonl``: TensorBoard events, figures, log lines.

    workdir/
      tensorboard/      event files (``tensorboard --logdir WORKDIR/tensorboard``)
      figures/NAME.png  the trainer's figures, rewritten at every evaluation

``metrics.jsonl`` stays the record; the events repeat it for TensorBoard:

* scalars: every numeric value of every epoch's row, at step = the epoch (the
  row's ``step`` column, the global optimizer step, is one of the scalars);
  tags put ``train_*`` and ``val_*`` under ``train/`` and ``val/`` (``tag``);
* images: the trainer's figures at every evaluation, under ``figures/NAME``,
  each one image: the same grid as the PNG.

Every run, resumed or not, writes a new event file that starts with a purge at
the first epoch it trains (``SummaryWriter(purge_step=...)``): TensorBoard
drops what a stopped run logged after its last checkpoint, so each epoch shows
once, with the values ``metrics.jsonl`` holds. Only process 0 reports (``Reporter``).
"""

from __future__ import annotations

import logging
import math
import os
import textwrap
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

log = logging.getLogger(__name__)

TENSORBOARD_DIR = "tensorboard"
FIGURES_DIR = "figures"


class Figure(NamedTuple):
  """One figure of a trainer: images [N, H, W, C] (floats in [0, 1]) shown as a grid of
  ``ncols`` columns (None: square), and what they show."""
  images: np.ndarray
  caption: str
  ncols: int | None = None


def reconstructions(originals: np.ndarray, reconstructed: np.ndarray, ncols: int = 16) -> Figure:
  """Rows alternating: ``ncols`` originals, then their reconstructions below them."""
  from vae_jax import plotting
  images, ncols = plotting.interleave_rows(np.asarray(originals), np.asarray(reconstructed), ncols)
  return Figure(images, "originals (odd rows) and reconstructions (even rows)", ncols)


def tag(name: str) -> str:
  """The TensorBoard tag of a metrics column: ``train_loss`` -> ``train/loss``,
  ``val_nll`` -> ``val/nll``; other columns keep their name."""
  for prefix in ("train_", "val_"):
    if name.startswith(prefix):
      return prefix[:-1] + "/" + name[len(prefix):]
  return name


def scalars(row: dict) -> dict[str, float]:
  """{tag: value} of a metrics row's numeric values, without ``epoch`` (the events' step)."""
  return {tag(k): float(v) for k, v in row.items()
          if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool)}


def run_name(workdir: str | Path) -> str:
  """The workdir as figures name the run: relative to the current directory when under it
  (``runs/default``), else its own name."""
  workdir = Path(workdir).resolve()
  try:
    return str(workdir.relative_to(Path.cwd().resolve()))
  except ValueError:
    return workdir.name


def figure_title(run: str, epoch: int, caption: str) -> str:
  """'runs/default · epoch 7: samples from p(x|z)', wrapped to lines of 72 characters."""
  return textwrap.fill(f"{run} · epoch {epoch}: {caption}", 72)


def save_figures(figures: dict[str, Figure], directory: Path, *, run: str, epoch: int) -> list[Path]:
  """Writes ``directory/NAME.png`` for every figure, titled with the run and the epoch."""
  from vae_jax import plotting
  return [plotting.save_grid(fig.images, Path(directory) / f"{name}.png", ncols=fig.ncols,
                             title=figure_title(run, epoch, fig.caption))
          for name, fig in figures.items()]


def _format(value) -> str:
  if isinstance(value, float):
    return f"{value:.5g}" if math.isfinite(value) else str(value)
  return str(value)


def epoch_line(row: dict, total_epochs: int, names: tuple[str, ...]) -> str:
  """'epoch 3/10  train_loss 101.23  val_elbo -99.8  val_nll 95.1  1.9 s': the columns ``names``
  the row has, then the epoch's seconds."""
  shown = [f"{k} {_format(row[k])}" for k in names if k in row]
  return "  ".join([f"epoch {row['epoch']}/{total_epochs}", *shown, f"{row.get('seconds', 0.0):.1f} s"])


def complete_line(workdir, epochs_done: int, total_epochs: int, *, best_metric: str | None = None,
                  best_score: float | None = None, best_epoch: int | None = None) -> str:
  """The line of a rerun that has nothing left to train."""
  if epochs_done == total_epochs:
    has = f"has all {epochs_done} epochs" if epochs_done > 1 else "has its 1 epoch"
  else:
    has = f"has {epochs_done} epochs, more than the {total_epochs} this run asks for"
  best = ""
  if best_metric and best_score is not None and best_epoch is not None:
    best = f" (best val_{best_metric} {best_score:.6g} at epoch {best_epoch})"
  return f"run complete: {workdir} {has}{best}; nothing to train"


class TensorBoard:
  """A ``tensorboardX.SummaryWriter`` on ``WORKDIR/tensorboard/``; step = the epoch.

  Events of epochs after ``start_epoch`` (the checkpoint the run starts from) left
  by a stopped run are purged. Each writer has an event file of its own, whose name sorts
  after the earlier ones'.
  """

  def __init__(self, workdir: str | Path, *, start_epoch: int = 0):
    from tensorboardX import SummaryWriter
    self.directory = Path(workdir) / TENSORBOARD_DIR
    self._writer = SummaryWriter(str(self.directory), purge_step=start_epoch + 1,
                                 filename_suffix=f".{time.time_ns()}.{os.getpid()}")

  def scalars(self, row: dict) -> None:
    for name, value in scalars(row).items():
      self._writer.add_scalar(name, value, global_step=int(row["epoch"]))
    self._writer.flush()

  def images(self, figures: dict[str, Figure], epoch: int) -> None:
    from vae_jax import plotting
    for name, fig in figures.items():
      self._writer.add_image(f"{FIGURES_DIR}/{name}", plotting.tile(fig.images, fig.ncols), global_step=epoch,
                             dataformats="HWC")
    self._writer.flush()

  def close(self) -> None:
    self._writer.close()


class Reporter:
  """A run's reports on process 0 (``enabled``): TensorBoard, figures and, with ``log_epochs``
  (no progress bar), one INFO line per epoch on the ``vae_jax`` logger."""

  def __init__(self, workdir: Path, *, start_epoch: int, total_epochs: int, names: tuple[str, ...],
               log_epochs: bool, enabled: bool = True):
    self.workdir, self.total_epochs, self.names = Path(workdir), total_epochs, names
    self.enabled, self.log_epochs = enabled, log_epochs and enabled
    self.run = run_name(workdir)
    self._board = TensorBoard(workdir, start_epoch=start_epoch) if enabled else None

  def epoch(self, row: dict) -> None:
    """Reports one epoch's metrics row."""
    if self._board is not None:
      self._board.scalars(row)
    if self.log_epochs:
      log.info("%s", epoch_line(row, self.total_epochs, self.names))

  def figures(self, figures: dict[str, Figure], epoch: int) -> None:
    """Saves the figures (``figures/NAME.png``) and sends them to TensorBoard."""
    if not self.enabled or not figures:
      return
    figures = {name: Figure(*fig) for name, fig in figures.items()}
    save_figures(figures, self.workdir / FIGURES_DIR, run=self.run, epoch=epoch)
    self._board.images(figures, epoch)

  def close(self) -> None:
    if self._board is not None:
      self._board.close()
