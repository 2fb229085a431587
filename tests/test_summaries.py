"""What a run reports beside metrics.jsonl: TensorBoard events read back with TensorBoard's own
reader, figures at every evaluation, one log line per epoch, and a finished run's rerun."""

import io
import re
import shutil

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator

from tests import test_loop
from tests.test_reliability import compile_cache  # noqa: F401  (autouse: a persistent XLA cache)
from vae_jax import plotting
from vae_jax import summaries
from vae_jax import train
from vae_jax import workdir as workdir_lib

pytestmark = pytest.mark.usefixtures("fast_compiling_rng")


def events(workdir) -> event_accumulator.EventAccumulator:
  acc = event_accumulator.EventAccumulator(str(workdir / summaries.TENSORBOARD_DIR),
                                           size_guidance={event_accumulator.SCALARS: 0,
                                                          event_accumulator.IMAGES: 0})
  acc.Reload()
  return acc


def check_scalars_equal_the_metrics(acc, rows):
  """Every numeric column of every row is one scalar event at step = its epoch, of its value."""
  for name in sorted({k for r in rows for k in r if k != "epoch"}):
    expected = [(r["epoch"], r[name]) for r in rows if name in r]
    got = [(e.step, e.value) for e in acc.Scalars(summaries.tag(name))]
    assert [s for s, _ in got] == [s for s, _ in expected], name
    np.testing.assert_allclose([v for _, v in got], [v for _, v in expected], rtol=1e-6, err_msg=name)


def test_tensorboard_holds_every_metric_and_the_figures_of_every_evaluation(tmp_path, monkeypatch):
  titles = []
  save_grid = plotting.save_grid
  monkeypatch.setattr(plotting, "save_grid", lambda images, path, **kw: titles.append(
      (path.name, kw["title"])) or save_grid(images, path, **kw))
  workdir = tmp_path / "run"
  rows = test_loop.run("vae", workdir)
  acc = events(workdir)
  assert set(acc.Tags()["scalars"]) >= {"train/loss", "train/kl", "val/elbo", "val/nll", "learning_rate", "step"}
  check_scalars_equal_the_metrics(acc, rows)
  assert set(acc.Tags()["images"]) == {"figures/samples", "figures/reconstructions"}
  assert [e.step for e in acc.Images("figures/samples")] == [1, 2, 3]  # every evaluation
  assert titles == [(f"{name}.png", f"run · epoch {e}: {caption}") for e in (1, 2, 3) for name, caption in (
      ("samples", "samples from p(x|z), z ~ p(z)"),
      ("reconstructions", "originals (odd rows) and reconstructions (even rows)"))]
  assert sorted(p.name for p in (workdir / "figures").iterdir()) == ["reconstructions.png", "samples.png"]

  # The last image is the grid of the final model's samples, computed here again from its checkpoint.
  config, model, params, epoch = train.restore_workdir(workdir)
  data = test_loop.test_vqvae.synthetic(n=64)
  figs = train.figures(model, params, data["validation"].images, train.RunKeys.from_seed(config.seed).eval,
                       config.data.mode)
  expected = (np.repeat(plotting.tile(figs["samples"].images), 3, axis=-1) * 255).astype(np.uint8)
  shown = np.asarray(Image.open(io.BytesIO(acc.Images("figures/samples")[-1].encoded_image_string)))
  np.testing.assert_array_equal(shown[..., :3], expected)


def test_a_resumed_run_purges_what_the_stopped_run_logged_after_its_checkpoint(tmp_path, monkeypatch):
  test_loop.scripted_fit(tmp_path, monkeypatch, num_epochs=3)
  first = workdir_lib.read_metrics(tmp_path)
  shutil.rmtree(tmp_path / workdir_lib.LATEST_DIR / "3")  # as if killed after logging epoch 3
  test_loop.scripted_fit(tmp_path, monkeypatch, num_epochs=3)  # epoch 3 again
  rows = workdir_lib.read_metrics(tmp_path)
  assert [r["epoch"] for r in rows] == [1, 2, 3] and rows[2]["seconds"] != first[2]["seconds"]
  assert len(list((tmp_path / summaries.TENSORBOARD_DIR).iterdir())) == 2  # an event file per run
  check_scalars_equal_the_metrics(events(tmp_path), rows)  # epoch 3 once, the rerun's values
  shutil.rmtree(tmp_path / workdir_lib.LATEST_DIR)  # as if killed before the first checkpoint
  test_loop.scripted_fit(tmp_path, monkeypatch, num_epochs=3)
  check_scalars_equal_the_metrics(events(tmp_path), workdir_lib.read_metrics(tmp_path))


def test_each_epoch_logs_one_line_without_the_progress_bar(tmp_path, monkeypatch, caplog):
  with caplog.at_level("INFO", logger="vae_jax"):
    test_loop.scripted_fit(tmp_path, monkeypatch, num_epochs=2)
  lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
  assert len(lines) == 2
  for e, line in enumerate(lines, 1):
    assert re.fullmatch(rf"epoch {e}/2  train_loss 1  val_nll 1  \d+\.\d s", line), line


def test_a_finished_run_rerun_says_so_and_returns_its_last_metrics(tmp_path, monkeypatch, caplog):
  nll = {4: 3.0, 8: 2.0, 12: 2.5}  # by step: the best is epoch 2
  evaluate = lambda state: {"nll": nll[int(state.step)]}
  test_loop.scripted_fit(tmp_path, monkeypatch, num_epochs=3, evaluate=evaluate)
  rows = workdir_lib.read_metrics(tmp_path)
  files = sorted((tmp_path / summaries.TENSORBOARD_DIR).iterdir())
  with caplog.at_level("INFO", logger="vae_jax"):
    _, last = test_loop.scripted_fit(tmp_path, monkeypatch, num_epochs=3, evaluate=evaluate)
    _, fewer = test_loop.scripted_fit(tmp_path, monkeypatch, num_epochs=2, evaluate=evaluate)
  assert last == fewer == rows[-1]
  assert (f"run complete: {tmp_path} has all 3 epochs (best val_nll 2 at epoch 2); nothing to train"
          in caplog.text)
  assert f"run complete: {tmp_path} has 3 epochs, more than the 2 this run asks for" in caplog.text
  assert sorted((tmp_path / summaries.TENSORBOARD_DIR).iterdir()) == files  # no new event file
  assert workdir_lib.read_metrics(tmp_path) == rows


def test_a_figure_title_names_the_run_and_the_epoch(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert summaries.run_name(tmp_path / "runs" / "default") == "runs/default"
  assert summaries.run_name("/elsewhere/default") == "default"
  assert summaries.figure_title("runs/default", 7, "samples from p(x|z)") == (
      "runs/default · epoch 7: samples from p(x|z)")
  assert summaries.tag("train_loss") == "train/loss" and summaries.tag("val_nll") == "val/nll"
  assert summaries.scalars({"epoch": 3, "step": 12, "ok": True, "name": "x", "val_nll": 1.5}) == {
      "step": 12.0, "val/nll": 1.5}
