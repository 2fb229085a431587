"""Training throughput of the MLP VAE in JAX and in PyTorch, against the fp32 matmul peak.

    python -m benchmarks.throughput [--batch_sizes 128,1024] [--epochs 3] [--num_examples 60000]
                                    [--out benchmarks/results/throughput.json] [--skip_torch]

Model: 784-400-20 MLP VAE (relu, one hidden layer each way, as in the official
PyTorch VAE example), Bernoulli likelihood from logits, analytic KL, one sample
per example, Adam (lr 1e-3, eps 1e-4), on synthetic binary images held in memory.
The JAX side is the library itself (``experiments/configs/default.py`` with
overrides, ``vae_jax.train.make_train_epoch``: one jitted ``lax.scan`` per epoch);
the PyTorch side (CPU build: ``pip install torch==2.13.0``) is the same model,
loss and optimizer written directly in PyTorch.

Throughput is examples/s over the median of ``--epochs`` steady epochs
(compilation excluded: it is reported apart, as the first epoch's time minus a
steady one's). Achieved GFLOP/s counts 3x the forward matmul FLOPs per example
(forward + backward) and is compared with the best steady GFLOP/s of a jitted
float32 ``jnp.dot`` of square matrices (numpy's is printed for reference).
Targets: JAX >= 1.5x PyTorch at batch 128, >= 60% of the matmul peak at 1024.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from experiments.configs import default as default_config
from vae_jax import config as config_lib
from vae_jax import losses
from vae_jax import train

IMAGE_SHAPE = (28, 28, 1)
HIDDEN, LATENT, PIXELS = 400, 20, 784
# Dense layers: encoder 784->400, heads 400->2x20, decoder 20->400, 400->784.
FORWARD_FLOPS = 2 * (PIXELS * HIDDEN + HIDDEN * 2 * LATENT + LATENT * HIDDEN + HIDDEN * PIXELS)
TRAIN_FLOPS = 3 * FORWARD_FLOPS  # per example: forward + backward
TARGET_RATIO, TARGET_PEAK_FRACTION = 1.5, 0.6
TORCH_PIN = "torch==2.13.0"


def _timed(fn, repeats: int) -> tuple[float, list[float]]:
  """(seconds of the first call, seconds of each of ``repeats`` later calls)."""
  times = []
  for _ in range(repeats + 1):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return times[0], times[1:]


def matmul_peak(sizes=(2048, 4096), repeats: int = 3) -> dict:
  """Steady GFLOP/s (2 n^3 / median time) of float32 n x n matmuls, jitted JAX and numpy."""
  out = {"jax": {}, "numpy": {}}
  dot = jax.jit(jnp.dot)
  for n in sizes:
    a, b = jax.random.normal(jax.random.key(n), (2, n, n), jnp.float32)
    _, times = _timed(lambda: dot(a, b).block_until_ready(), repeats)
    out["jax"][n] = 2 * n**3 / statistics.median(times) / 1e9
    a, b = np.asarray(a), np.asarray(b)
    _, times = _timed(lambda: a @ b, repeats)
    out["numpy"][n] = 2 * n**3 / statistics.median(times) / 1e9
  out["peak_gflops"] = max(out["jax"].values())
  return out


def make_config(batch_size: int):
  config = default_config.get_config()
  config.data.name = "binarized_mnist"
  config.data.mode = "static"
  config.model.hidden_sizes = ((HIDDEN,),)
  config.model.latent_dims = (LATENT,)
  config.model.activation = "relu"
  config.batch_size = batch_size
  config_lib.validate(config)
  return config


def jax_throughput(images: np.ndarray, batch_size: int, epochs: int) -> dict:
  """Examples/s of steady epochs of the library's trainer, and its compile seconds."""
  config = make_config(batch_size)
  model = config_lib.make_model(config)
  steps = images.shape[0] // batch_size
  tx = config_lib.make_optimizer(config.optimizer,
                                 config_lib.make_schedule(config.optimizer, steps, epochs + 1))
  keys = train.RunKeys.from_seed(config.seed)
  state = train.create_train_state(model, keys.init, tx)
  train_epoch = train.make_train_epoch(model, losses.make_loss(config.loss), mode=config.data.mode,
                                       batch_size=batch_size, beta=config.loss.beta)
  images = jax.device_put(jnp.asarray(images, jnp.uint8))
  epoch, loss = 0, None

  def run_epoch():
    nonlocal state, epoch, loss
    epoch += 1
    state, metrics = jax.block_until_ready(
        train_epoch(state, images, epoch, keys.train, keys.data))
    loss = float(np.mean(metrics["loss"]))

  first, times = _timed(run_epoch, epochs)
  seconds = statistics.median(times)
  return {"examples_per_s": steps * batch_size / seconds, "epoch_seconds": seconds,
          "compile_seconds": first - seconds, "final_loss": loss}


def torch_throughput(images: np.ndarray, batch_size: int, epochs: int) -> dict:
  """Examples/s of steady epochs (after one warm-up) of the same VAE written in PyTorch."""
  import torch
  from torch import nn
  import torch.nn.functional as F

  class VAE(nn.Module):
    def __init__(self):
      super().__init__()
      self.fc1 = nn.Linear(PIXELS, HIDDEN)
      self.fc21, self.fc22 = nn.Linear(HIDDEN, LATENT), nn.Linear(HIDDEN, LATENT)
      self.fc3, self.fc4 = nn.Linear(LATENT, HIDDEN), nn.Linear(HIDDEN, PIXELS)

    def forward(self, x):
      h = F.relu(self.fc1(x))
      mean, logvar = self.fc21(h), self.fc22(h)
      z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
      return self.fc4(F.relu(self.fc3(z))), mean, logvar

  torch.manual_seed(0)
  torch.set_num_threads(os.cpu_count())
  opt_config = make_config(batch_size).optimizer
  model = VAE()
  opt = torch.optim.Adam(model.parameters(), lr=opt_config.learning_rate,
                         betas=(opt_config.b1, opt_config.b2), eps=opt_config.eps)
  data = torch.from_numpy(images.reshape(images.shape[0], -1).astype(np.float32))
  steps = data.shape[0] // batch_size
  losses_ = []

  def run_epoch():
    perm = torch.randperm(data.shape[0])
    total = 0.0
    for i in range(steps):
      x = data[perm[i * batch_size:(i + 1) * batch_size]]
      logits, mean, logvar = model(x)
      recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum")
      kl = -0.5 * torch.sum(1 + logvar - mean.square() - logvar.exp())
      loss = (recon + kl) / batch_size
      opt.zero_grad(set_to_none=True)
      loss.backward()
      opt.step()
      total += loss.detach()
    losses_.append(float(total) / steps)

  _, times = _timed(run_epoch, epochs)
  seconds = statistics.median(times)
  return {"examples_per_s": steps * batch_size / seconds, "epoch_seconds": seconds,
          "final_loss": losses_[-1]}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--batch_sizes", default="128,1024", help="comma-separated batch sizes")
  parser.add_argument("--epochs", type=int, default=3, help="timed (steady) epochs per run")
  parser.add_argument("--num_examples", type=int, default=60000, help="synthetic training images")
  parser.add_argument("--out", default="benchmarks/results/throughput.json", help="JSON results")
  parser.add_argument("--skip_torch", action="store_true", help="time the JAX side only")
  args = parser.parse_args()
  batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
  if args.epochs < 1 or any(b < 1 or b > args.num_examples for b in batch_sizes):
    parser.error("need --epochs >= 1 and batch sizes in [1, --num_examples]")

  torch_version = None
  if not args.skip_torch:
    try:
      import torch
      torch_version = torch.__version__
    except ImportError:
      print("PyTorch is not installed: timing JAX only. For the comparison, install the CPU build "
            f"with `pip install {TORCH_PIN}` (this exact pin; an unpinned install pulls GBs of "
            "CUDA wheels).\n")

  rng = np.random.default_rng(0)
  images = (rng.random((args.num_examples, *IMAGE_SHAPE)) < 0.5).astype(np.uint8)
  machine = {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
             "jax_version": jax.__version__, "jax_backend": jax.default_backend(),
             "torch_version": torch_version, "load_average_1min": os.getloadavg()[0]}
  print(f"machine: {machine}")
  if machine["load_average_1min"] > 1.0:
    print("warning: the CPU is busy (load average above 1): timings will be low and noisy, "
          "PyTorch's most of all (its threads wait on each other when cores are shared)")
  peak = matmul_peak()
  for lib in ("jax", "numpy"):
    print(f"fp32 matmul GFLOP/s ({lib}): "
          + ", ".join(f"n={n}: {g:.1f}" for n, g in peak[lib].items()))
  print(f"peak (best jax): {peak['peak_gflops']:.1f} GFLOP/s; "
        f"model: {TRAIN_FLOPS / 1e6:.2f} MFLOP per training example\n")

  results = {}
  for b in batch_sizes:
    r = {"jax": jax_throughput(images, b, args.epochs)}
    r["jax_gflops"] = r["jax"]["examples_per_s"] * TRAIN_FLOPS / 1e9
    r["fraction_of_peak"] = r["jax_gflops"] / peak["peak_gflops"]
    if torch_version:
      r["torch"] = torch_throughput(images, b, args.epochs)
      r["ratio"] = r["jax"]["examples_per_s"] / r["torch"]["examples_per_s"]
    results[b] = r

  header = (f"{'batch':>6} {'jax ex/s':>10} {'torch ex/s':>10} {'ratio':>6} {'jax GFLOP/s':>11} "
            f"{'of peak':>7} {'compile s':>9} {'jax loss':>8} {'torch loss':>10}")
  print(header + "\n" + "-" * len(header))
  for b, r in results.items():
    t = r.get("torch")
    torch_cols = ((f"{t['examples_per_s']:.0f}", f"{r['ratio']:.2f}x", f"{t['final_loss']:.1f}")
                  if t else ("-", "-", "-"))
    print(f"{b:>6} {r['jax']['examples_per_s']:>10.0f} {torch_cols[0]:>10} {torch_cols[1]:>6} "
          f"{r['jax_gflops']:>11.1f} {r['fraction_of_peak']:>7.1%} "
          f"{r['jax']['compile_seconds']:>9.2f} {r['jax']['final_loss']:>8.1f} {torch_cols[2]:>10}")

  print()
  checks = {}
  if 128 in results and "ratio" in results[128]:
    checks["ratio_at_128"] = results[128]["ratio"] >= TARGET_RATIO
    print(f"batch 128: {results[128]['ratio']:.2f}x PyTorch (target >= {TARGET_RATIO}x): "
          f"{'PASS' if checks['ratio_at_128'] else 'FAIL'}")
  elif 128 in results:
    print("batch 128: no PyTorch timing, ratio target not checked")
  if 1024 in results:
    checks["peak_at_1024"] = results[1024]["fraction_of_peak"] >= TARGET_PEAK_FRACTION
    print(f"batch 1024: {results[1024]['fraction_of_peak']:.1%} of the matmul peak "
          f"(target >= {TARGET_PEAK_FRACTION:.0%}): {'PASS' if checks['peak_at_1024'] else 'FAIL'}")

  out = Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps({"machine": machine, "args": vars(args), "matmul": peak,
                             "train_flops_per_example": TRAIN_FLOPS,
                             "batch_sizes": {str(b): r for b, r in results.items()},
                             "targets_met": checks}, indent=2) + "\n")
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
