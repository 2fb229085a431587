"""The public API (``import vae_jax as vj``): README's example as written, user loss fields,
the recorded loss, ``restore`` and ``sample`` for every model kind, and the everyday commands."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import vae_jax as vj
from tests import test_loop
from tests import test_train
from tests import test_vqvae
from tests.conftest import requires_binarized_mnist
from vae_jax import provenance
from vae_jax import train
from vae_jax.commands import evaluate as evaluate_command
from vae_jax.commands import plot_metrics

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("fast_compiling_rng")


def readme_python_blocks(section: str) -> list[str]:
  text = (ROOT / "README.md").read_text()
  start = text.index(f"## {section}")
  end = text.find("\n## ", start + 1)
  return re.findall(r"```python\n(.*?)```", text[start:end if end > 0 else None], re.S)


@requires_binarized_mnist
def test_readme_api_example_runs_as_written(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  code = readme_python_blocks("Python API")[0]
  namespace = {}
  exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 (the README's own example)
  images, run = namespace["images"], namespace["run"]
  assert images.shape == (16, 28, 28, 1) and images.dtype == np.float32
  assert 0.0 <= images.min() and images.max() <= 1.0
  assert run.kind == "vae" and run.epoch == 2
  assert (tmp_path / "runs/notebook/my_samples.png").exists()
  assert json.loads((tmp_path / "runs/notebook/loss.json").read_text()) == {
      "loss": "vae_jax.losses:elbo_loss"}
  assert np.isfinite(namespace["metrics"]["val_nll"])


def free_bits_elbo(model, params, x, key, *, kl_weight, free_bits: float = 0.0):
  t = model.apply({"params": params}, x, key, 1)
  kl_units = 0.5 * (t["mean"]**2 + jnp.exp(t["logvar"]) - 1 - t["logvar"])
  kl = jnp.sum(jnp.maximum(kl_units, free_bits))
  return -t["log_px_z"][0] + kl_weight * kl, {"kl": kl}


FREE_BITS = f"{free_bits_elbo.__module__}:free_bits_elbo"  # what the workdir records

def test_a_user_loss_field_reaches_the_loss_and_is_recorded(tmp_path):
  cfg = test_train.tiny_config(num_epochs=1)
  cfg.loss.kwargs.free_bits = 3.0
  cfg.notes = "free bits"
  _, last = vj.train_and_evaluate(cfg, tmp_path, loss_fn=free_bits_elbo, datasets=test_train.synthetic(64))
  saved = json.loads((tmp_path / "config.json").read_text())
  assert saved["loss"]["kwargs"] == {"free_bits": 3.0} and saved["notes"] == "free bits"
  assert json.loads((tmp_path / "loss.json").read_text()) == {"loss": FREE_BITS}
  # Every one of the 4 units pays at least 3 nats: the bound was bound to the field.
  assert last["train_kl"] >= 4 * 3.0 - 1e-4
  assert vj.restore(tmp_path).config.loss.kwargs.free_bits == 3.0


def test_resuming_with_another_loss_or_other_user_fields_is_refused(tmp_path):
  data = test_train.synthetic(64)
  cfg = test_train.tiny_config(num_epochs=1)
  cfg.loss.kwargs.free_bits = 1.0
  vj.train_and_evaluate(cfg, tmp_path, loss_fn=free_bits_elbo, datasets=data)
  more = test_train.tiny_config(num_epochs=2)
  more.loss.kwargs.free_bits = 1.0
  with pytest.raises(vj.WorkdirError, match=re.escape(f"trained with the loss {FREE_BITS}, "
                                                      "not vae_jax.losses:elbo_loss")):
    vj.train_and_evaluate(more, tmp_path, datasets=data)  # the configured ELBO instead
  other = test_train.tiny_config(num_epochs=2)
  other.loss.kwargs.free_bits = 2.0
  with pytest.raises(vj.ConfigError, match=r"loss.kwargs.free_bits: 1.0 in the workdir, 2.0 now"):
    vj.train_and_evaluate(other, tmp_path, loss_fn=free_bits_elbo, datasets=data)
  more.notes = "notes may change"
  vj.train_and_evaluate(more, tmp_path, loss_fn=free_bits_elbo, datasets=data)  # same loss: resumes
  assert [r["epoch"] for r in test_train.read_metrics(tmp_path)] == [1, 2]


@pytest.mark.parametrize("kwargs,match", [
    ({"free_bit": 0.1}, r"config.loss.kwargs.free_bit=0.1 is invalid: the loss "
                        r"\S*test_api:free_bits_elbo takes no keyword 'free_bit' \(its keywords: "
                        r"kl_weight, free_bits\)"),
    ({"free_bits": "a lot"}, r"config.loss.kwargs.free_bits='a lot' is invalid: .* declares free_bits "
                             r"as a number"),
    ({"free_bits": float("nan")}, r"config.loss.kwargs=.* a user field holds a finite number"),
])
def test_bad_user_fields_are_named_before_any_compute(tmp_path, kwargs, match):
  cfg = test_train.tiny_config(num_epochs=1)
  for k, v in kwargs.items():
    cfg.loss.kwargs[k] = v
  with pytest.raises(vj.ConfigError, match=match):
    vj.train_and_evaluate(cfg, tmp_path, loss_fn=free_bits_elbo, datasets=test_train.synthetic(64))
  assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "loss.json").exists()


def test_an_old_workdir_loads_with_empty_user_fields():
  old = ROOT / "tests/data/workdirs_v0_1"
  vae_dirs = [p.parent for p in old.rglob("config.json") if vj.workdir_kind(p.parent) == "vae"]
  assert vae_dirs
  config = train.load_config(vae_dirs[0])
  assert dict(config.loss.kwargs) == {} and config.notes == ""


def _trained(kind, workdir, vq_workdir=None, **overrides):
  cfg, fn = test_loop.tiny(kind, vq_workdir, num_epochs=1, **overrides)
  fn(cfg, workdir)
  return workdir


def test_sample_from_a_vae_and_an_hvae(tmp_path):
  vae = vj.restore(_trained("vae", tmp_path / "vae"))
  a = vj.sample(vae, jax.random.key(0), 5)
  assert a.shape == (5, 28, 28, 1) and 0 <= a.min() and a.max() <= 1
  np.testing.assert_array_equal(a, vj.sample(vae, jax.random.key(0), 5))  # the key decides
  assert not np.array_equal(a, vj.sample(vae, jax.random.key(1), 5))
  # Independent of sample(): decode z ~ N(0, I) drawn with the prior's own key split.
  z = jax.random.normal(jax.random.split(jax.random.key(0), 1)[0], (5, 4))
  direct = vae.model.apply({"params": vae.params}, vae.model.apply({"params": vae.params}, z,
                                                                   method=vae.model.decode),
                           method=vae.model.mean_image)
  np.testing.assert_allclose(a, np.asarray(direct), atol=1e-6)
  with pytest.raises(ValueError, match="not class-conditional"):
    vj.sample(vae, jax.random.key(0), 2, labels=1)
  hvae = vj.restore(_trained("vae", tmp_path / "hvae", **{
      "model.kind": "hvae", "model.latent_dims": (4, 2), "model.hidden_sizes": ((8,), (8,)),
      "loss.analytic_kl": False}))
  assert hvae.kind == "hvae" and vj.sample(hvae, jax.random.key(0), 3).shape == (3, 28, 28, 1)


def test_a_cvae_samples_the_class_it_is_given(tmp_path):
  """Trained on 10 class prototypes, samples of class y lie nearest prototype y."""
  cfg = test_train.tiny_config(**{"data.name": "mnist", "data.mode": "dynamic", "model.num_classes": 10,
                                  "num_epochs": 30, "eval_every_epochs": 30, "checkpoint_every_epochs": 30,
                                  "model.hidden_sizes": ((64,),), "optimizer.learning_rate": 3e-3})
  rng = np.random.default_rng(0)
  protos = (rng.uniform(size=(10, 28, 28, 1)) < 0.5).astype(np.float32)  # distinct binary images
  labels = np.arange(320) % 10
  images = (rng.uniform(size=(320, 28, 28, 1)) < 0.05 + 0.9 * protos[labels]).astype(np.uint8) * 255
  split = vj.data.Split(images, labels.astype(np.int32))
  vj.train_and_evaluate(cfg, tmp_path, datasets={"train": split, "validation": split})
  run = vj.restore(tmp_path)
  for y in (2, 7):
    samples = vj.sample(run, jax.random.key(y), 8, labels=y)
    dist = ((samples[:, None] - protos[None]) ** 2).sum((2, 3, 4))  # [8, 10]
    assert (dist.argmin(1) == y).mean() >= 0.75, dist.argmin(1)
  with pytest.raises(ValueError, match=r"labels must be in \[0, 10\)"):
    vj.sample(run, jax.random.key(0), 2, labels=10)


def test_sample_from_a_prior_workdir_and_refuse_a_bare_vqvae(tmp_path):
  vq_dir = _trained("vqvae", tmp_path / "vq")
  vq = vj.restore(vq_dir)
  assert vq.kind == "vqvae"
  with pytest.raises(ValueError, match="its codes need a prior"):
    vj.sample(vq, jax.random.key(0), 2)
  prior = vj.restore(_trained("prior", tmp_path / "prior", vq_dir))
  assert prior.kind == "prior" and prior.vqvae.workdir == vq_dir.absolute()
  images = vj.sample(prior, jax.random.key(0), 4, labels=3)
  assert images.shape == (4, 28, 28, 1) and 0 <= images.min() and images.max() <= 1


def test_get_config_names_every_packaged_config():
  assert vj.get_config("vq/prior_mnist").model.name == "gated_pixelcnn"
  with pytest.raises(vj.ConfigError, match="no packaged config 'nope'"):
    vj.get_config("nope")


def test_evaluation_outputs_are_named_by_split_k_and_count():
  assert evaluate_command.output_name("test", 5000, 10000) == "eval_test_K5000_n10000.json"
  assert evaluate_command.output_name("test", 100, 10000) == "eval_test_K100_n10000.json"
  assert evaluate_command.output_name("validation", 50, 64, "best") == "eval_validation_K50_n64_best.json"


def test_provenance_names_the_stack_and_the_commit():
  p = provenance.provenance()
  assert p["versions"]["jax"] == jax.__version__ and p["versions"]["python"].startswith("3.")
  head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
  if head.returncode == 0:
    assert p["git_commit"].split("-")[0] == head.stdout.strip()


def test_plot_metrics_keeps_runs_of_the_same_folder_name_apart(tmp_path):
  for seed, value in (("a/seed0", 1.0), ("b/seed0", 2.0)):
    (tmp_path / seed).mkdir(parents=True)
    rows = [{"epoch": e, "val_nll": value * e, "train_loss": -value} for e in (1, 2)]
    (tmp_path / seed / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
  panels = plot_metrics.panels([tmp_path / "a/seed0", tmp_path / "b/seed0"], ["val_nll", "train_loss"])
  assert panels == {"val_nll": {"a/seed0": ([1, 2], [1.0, 2.0]), "b/seed0": ([1, 2], [2.0, 4.0])},
                    "train_loss": {"a/seed0": ([1, 2], [-1.0, -1.0]), "b/seed0": ([1, 2], [-2.0, -2.0])}}
  path = vj.plotting.save_panels(panels, tmp_path / "p.png")
  assert path.stat().st_size > 0


def cli(*args, cwd):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "vae_jax", *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=600)


@requires_binarized_mnist
def test_the_commands_run_from_another_directory(tmp_path):
  """``--config NAME`` finds the packaged config; train, evaluate, sample outside the repository."""
  elsewhere = tmp_path / "elsewhere"
  elsewhere.mkdir()
  proc = cli("train", "--config", "default", "--workdir", "w", "--config.num_epochs=1",
             "--config.eval_num_samples=1", "--config.progress=false",
             "--config.model.latent_dims=(4,)", cwd=elsewhere)
  assert proc.returncode == 0, proc.stderr[-2000:]
  proc = cli("evaluate", "--workdir", "w", "--num_importance_samples", "2", "--num_images", "20",
             cwd=elsewhere)
  assert proc.returncode == 0, proc.stderr[-2000:]
  result = json.loads((elsewhere / "w/eval_test_K2_n20.json").read_text())
  assert result["git_commit"] is None or len(result["git_commit"]) >= 40
  assert result["versions"]["jax"] == jax.__version__
  proc = cli("sample", "--workdir", "w", "--num_samples", "4", cwd=elsewhere)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert json.loads(proc.stdout)["kind"] == "vae" and (elsewhere / "w/figures/samples_seed0.png").exists()
  proc = cli("train", "--config", "no_such_config", "--workdir", "w2", cwd=elsewhere)
  assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
  assert "no packaged config of that name" in proc.stderr
