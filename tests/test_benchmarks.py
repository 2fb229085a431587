"""The VQ benchmark's FLOP counts, against hand computations.

(That its PyTorch references compute the library's function is checked by the
benchmark itself on every run: it prints both first-batch losses and the
largest difference of the PixelCNN logits. As tests they cost about 20
CPU-seconds of compilation, more than their place in the suite is worth.)
"""

from benchmarks import vq as vq_bench
from vae_jax.configs.vq import prior_mnist
from vae_jax.configs.vq import vqvae_mnist
from vae_jax.vq import config as vq_config


def test_flop_counts_of_the_mnist_models():
  model = vq_config.make_vqvae(vqvae_mnist.get_config())
  # Encoder: 14*14*16*1*32 + 7*7*16*32*64 + 7*7*9*64*64 + 2*(7*7*9*64*32 + 7*7*32*64) + 7*7*64*16
  #        = 100,352 + 1,605,632 + 1,806,336 + 2,007,040 + 50,176 = 5,569,536;
  # distances 7*7*16*64 = 50,176;
  # decoder: 7*7*9*16*64 + 2,007,040 + 7*7*16*64*32 + 14*14*16*32*1 = 4,164,608.
  assert vq_bench.vqvae_forward_macs(model) == 5_569_536 + 50_176 + 4_164_608
  prior = vq_config.make_prior(prior_mnist.get_config(), model)
  # Per position: embed 64*32; 8 layers of 9*32*64 + 3*32*64 + 64*64 + 32*32; out 32*64 + 64*64.
  per_position = 64 * 32 + 8 * (18_432 + 6_144 + 4_096 + 1_024) + 2_048 + 4_096
  assert vq_bench.pixelcnn_forward_macs(prior) == 49 * per_position == 12_042_240


def _row(model, width, examples_per_s):
  return {"model": model, "width": width, "jax": {"examples_per_s": examples_per_s}}


def test_gpu_targets_project_the_measured_rates_and_check_them_on_a_gpu_only(monkeypatch, capsys):
  from benchmarks import throughput

  results = {"mlp b128": _row("mlp", throughput.HIDDEN, 100_000.0),
             "mlp b1024": _row("mlp", throughput.HIDDEN, 250_000.0),
             "mlp b1024 w1600": _row("mlp", 1600, 900_000.0),  # another width: not the target's model
             "iwae k50 b100": _row("iwae", throughput.IWAE_HIDDEN, 80_000.0)}
  checks = {}
  record = lambda key, ok, text: checks.__setitem__(key, ok)
  # 60,000 / 250,000 = 0.24 s; 3,280 * 50,000 / 80,000 / 60 = 34.17 min.
  expected = {"mnist_epoch_seconds": 0.24, "burda_schedule_minutes": 3280 * 50000 / 80000 / 60}
  projections = throughput.gpu_targets(results, "iwae k50 b100", record)
  assert projections == expected
  assert checks == {} and capsys.readouterr().out.count("reported (checked on a GPU)") == 2
  monkeypatch.setattr(throughput.jax, "default_backend", lambda: "gpu")
  assert throughput.gpu_targets(results, "iwae k50 b100", record) == expected
  assert checks == {"gpu_mnist_epoch_seconds": True, "gpu_burda_schedule_minutes": False}
