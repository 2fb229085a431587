"""Training throughput of the MLP, conv and IWAE VAEs in JAX and in PyTorch, against the matmul peak.

    python -m benchmarks.throughput [--models mlp,conv,iwae] [--batch_sizes 128,1024]
                                    [--widths 100,200,800,1600] [--epochs 3] [--skip_torch]
                                    [--out benchmarks/results/throughput.json]

Models (Bernoulli likelihood from logits, Adam lr 1e-3 eps 1e-4, synthetic
binary images held in memory):
- mlp: 784-400-20 relu VAE (the official PyTorch VAE example), one sample,
  analytic KL, at each batch size; then other hidden widths at the largest
  batch size, to show how the cost grows with width;
- conv: stride-2 3x3 convolutions 32/64 down, transposed convolutions up,
  20 latents, batch 128, with the library's patches + matmul convolutions and
  again with ``lax.conv`` (``conv_xla``);
- iwae: Burda et al.'s 784-200-200-50 tanh network with the k = 50 IWAE bound.
The JAX side is the library itself (``vae_jax/configs/default.py`` with
overrides, ``vae_jax.train.make_train_epoch``: one jitted ``lax.scan`` per
epoch); the PyTorch side (CPU build: ``pip install torch==2.13.0``) is the same
model, loss and optimizer written directly in PyTorch (tuned: data indexed from
one tensor, no per-step host sync), and at batch 128 also the official
PyTorch VAE example's own loop (``DataLoader``, ``loss.item()`` every step:
the reference of the 2.2x target).

Throughput is examples/s over the median of ``--epochs`` steady epochs
(compilation excluded: it is reported apart, as the first epoch's time minus a
steady one's). Achieved GFLOP/s counts 3x the forward multiply-add FLOPs per
example (forward + backward) and is compared with the best steady GFLOP/s of a
jitted float32 ``jnp.dot`` of square matrices (numpy's is printed too).
Targets: MLP >= 2.2x PyTorch at batch 128 and >= 85% of the matmul peak at
1024; conv >= 7x ``lax.conv``. On a GPU also (``gpu_targets``; projected and
reported elsewhere): one 60,000-image MNIST epoch of the MLP VAE under 0.3 s,
and Burda's schedule of IWAE k = 50 steps under 30 min.
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

from vae_jax.configs import default as default_config
from vae_jax import compilation
from vae_jax import config as config_lib
from vae_jax import losses
from vae_jax import train

IMAGE_SHAPE = (28, 28, 1)
HIDDEN, LATENT, PIXELS = 400, 20, 784
CONV_FEATURES = (32, 64)
IWAE_HIDDEN, IWAE_LATENT, IWAE_K = 200, 50, 50
# Dense layers: encoder 784->400, heads 400->2x20, decoder 20->400, 400->784.
FORWARD_FLOPS = 2 * (PIXELS * HIDDEN + HIDDEN * 2 * LATENT + LATENT * HIDDEN + HIDDEN * PIXELS)
TRAIN_FLOPS = 3 * FORWARD_FLOPS  # per example: forward + backward
TARGET_RATIO, TARGET_PEAK_FRACTION, TARGET_CONV_SPEEDUP = 2.2, 0.85, 7.0
# GPU targets (checked when jax's backend is a GPU; reported on others): one
# epoch of the 60,000 MNIST training images for the MLP VAE, and Burda et al.'s
# schedule of 3,280 passes over binarized MNIST's 50,000 training images
# (``vae_jax/configs/burda_iwae.py``) with the IWAE k = 50 step.
MNIST_EPOCH, TARGET_GPU_EPOCH_S = 60000, 0.3
BURDA_PASSES, BURDA_TRAIN_EXAMPLES, TARGET_GPU_BURDA_MIN = 3280, 50000, 30.0
TORCH_PIN = "torch==2.13.0"


def _timed(fn, repeats: int) -> tuple[float, list[float]]:
  """(seconds of the first call, seconds of each of ``repeats`` later calls)."""
  times = []
  for _ in range(repeats + 1):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return times[0], times[1:]


def matmul_peak(sizes=(2048, 4096), repeats: dict | None = None) -> dict:
  """Steady GFLOP/s (2 n^3 / median time) of float32 n x n matmuls, jitted JAX and numpy.

  ``repeats[n]`` timed calls per size (default 11 at n = 2048, 5 at 4096: about
  0.5 and 2 s here); fewer let one slow call move the median on shared cores.
  """
  repeats = {2048: 11, 4096: 5, **(repeats or {})}
  out = {"jax": {}, "numpy": {}}
  dot = jax.jit(jnp.dot)
  for n in sizes:
    a, b = jax.random.normal(jax.random.key(n), (2, n, n), jnp.float32)
    _, times = _timed(lambda: dot(a, b).block_until_ready(), repeats.get(n, 5))
    out["jax"][n] = 2 * n**3 / statistics.median(times) / 1e9
    a, b = np.asarray(a), np.asarray(b)
    _, times = _timed(lambda: a @ b, repeats.get(n, 5))
    out["numpy"][n] = 2 * n**3 / statistics.median(times) / 1e9
  out["peak_gflops"] = max(out["jax"].values())
  return out


def _per_size(gflops: dict) -> str:
  """The text "n=2048: 401.2, n=4096: 355.0" of {n: GFLOP/s}."""
  return ", ".join(f"n={n}: {g:.1f}" for n, g in gflops.items())


def make_config(batch_size: int, model: str = "mlp", width: int = HIDDEN,
                matmul_dtype: str = "float32"):
  """The benchmark's config for ``model`` in {"mlp", "conv", "conv_xla", "iwae"}."""
  config = default_config.get_config()
  config.model.matmul_dtype = matmul_dtype
  config.data.name = "binarized_mnist"
  config.data.mode = "static"
  config.batch_size = batch_size
  if model == "iwae":  # Burda et al.'s 1-layer IWAE, k = 50
    config.model.hidden_sizes = ((IWAE_HIDDEN, IWAE_HIDDEN),)
    config.model.latent_dims = (IWAE_LATENT,)
    config.model.activation = "tanh"
    config.loss.name, config.loss.num_samples = "iwae", IWAE_K
  else:
    config.model.hidden_sizes = ((width,),)
    config.model.latent_dims = (LATENT,)
    config.model.activation = "relu"
  if model.startswith("conv"):
    config.model.network = "conv"
    config.model.conv_features = CONV_FEATURES
    config.model.conv_implementation = "xla" if model == "conv_xla" else "patches"
  config_lib.validate(config)
  return config


def train_flops(model: str, width: int = HIDDEN) -> float:
  """3x the forward multiply-add FLOPs of one training example (forward + backward)."""
  if model == "mlp":
    macs = PIXELS * width + width * 2 * LATENT + LATENT * width + width * PIXELS
  elif model == "iwae":
    h = IWAE_HIDDEN
    enc = PIXELS * h + h * h + h * 2 * IWAE_LATENT
    macs = enc + IWAE_K * (IWAE_LATENT * h + h * h + h * PIXELS)
  else:  # conv: stride-2 3x3 convs down, dense heads, dense + transposed convs up, 3x3 out
    c1, c2 = CONV_FEATURES
    flat = 7 * 7 * c2
    enc = 14 * 14 * 9 * 1 * c1 + 7 * 7 * 9 * c1 * c2 + flat * 2 * LATENT
    dec = LATENT * flat + 7 * 7 * 9 * c2 * c2 + 14 * 14 * 9 * c2 * c1 + 28 * 28 * 9 * c1
    macs = enc + dec
  return 3 * 2 * macs


def jax_throughput(images: np.ndarray, batch_size: int, epochs: int, model_name: str = "mlp",
                   width: int = HIDDEN, matmul_dtype: str = "float32") -> dict:
  """Examples/s of steady epochs of the library's trainer, and its compile seconds."""
  config = make_config(batch_size, model_name, width, matmul_dtype)
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


def _torch_model(model_name: str, width: int):
  from torch import nn
  import torch.nn.functional as F

  class MLPVAE(nn.Module):
    def __init__(self):
      super().__init__()
      self.fc1 = nn.Linear(PIXELS, width)
      self.fc21, self.fc22 = nn.Linear(width, LATENT), nn.Linear(width, LATENT)
      self.fc3, self.fc4 = nn.Linear(LATENT, width), nn.Linear(width, PIXELS)

    def encode(self, x):
      h = F.relu(self.fc1(x.flatten(1)))
      return self.fc21(h), self.fc22(h)

    def decode(self, z):
      return self.fc4(F.relu(self.fc3(z)))

  class ConvVAE(nn.Module):
    def __init__(self):
      super().__init__()
      c1, c2 = CONV_FEATURES
      self.enc = nn.Sequential(nn.Conv2d(1, c1, 3, 2, 1), nn.ReLU(), nn.Conv2d(c1, c2, 3, 2, 1),
                               nn.ReLU(), nn.Flatten())
      self.mean, self.logvar = nn.Linear(7 * 7 * c2, LATENT), nn.Linear(7 * 7 * c2, LATENT)
      self.project = nn.Linear(LATENT, 7 * 7 * c2)
      self.dec = nn.Sequential(nn.ConvTranspose2d(c2, c2, 3, 2, 1, 1), nn.ReLU(),
                               nn.ConvTranspose2d(c2, c1, 3, 2, 1, 1), nn.ReLU(),
                               nn.Conv2d(c1, 1, 3, 1, 1))

    def encode(self, x):
      h = self.enc(x)
      return self.mean(h), self.logvar(h)

    def decode(self, z):
      h = F.relu(self.project(z)).view(-1, CONV_FEATURES[1], 7, 7)
      return self.dec(h).flatten(1)

  class IWAE(nn.Module):
    def __init__(self):
      super().__init__()
      h = IWAE_HIDDEN
      self.enc = nn.Sequential(nn.Linear(PIXELS, h), nn.Tanh(), nn.Linear(h, h), nn.Tanh())
      self.mean, self.logvar = nn.Linear(h, IWAE_LATENT), nn.Linear(h, IWAE_LATENT)
      self.dec = nn.Sequential(nn.Linear(IWAE_LATENT, h), nn.Tanh(), nn.Linear(h, h), nn.Tanh(),
                               nn.Linear(h, PIXELS))

    def encode(self, x):
      h = self.enc(x.flatten(1))
      return self.mean(h), self.logvar(h)

    def decode(self, z):
      return self.dec(z)

  return {"mlp": MLPVAE, "conv": ConvVAE, "iwae": IWAE}[model_name.split("_")[0]]()


def torch_throughput(images: np.ndarray, batch_size: int, epochs: int, model_name: str = "mlp",
                     width: int = HIDDEN, threads: int | None = None) -> dict:
  """Examples/s of steady epochs (after one warm-up) of the same VAE written in PyTorch."""
  import math
  import torch
  import torch.nn.functional as F

  torch.manual_seed(0)
  torch.set_num_threads(threads or os.cpu_count())
  opt_config = make_config(batch_size, model_name, width).optimizer
  model = _torch_model(model_name, width)
  opt = torch.optim.Adam(model.parameters(), lr=opt_config.learning_rate,
                         betas=(opt_config.b1, opt_config.b2), eps=opt_config.eps)
  data = torch.from_numpy(images.transpose(0, 3, 1, 2).astype(np.float32))  # NCHW
  steps = data.shape[0] // batch_size
  losses_ = []

  def loss_of(x):
    mean, logvar = model.encode(x)
    flat = x.flatten(1)
    if model_name == "iwae":
      std = torch.exp(0.5 * logvar)
      eps = torch.randn(x.shape[0], IWAE_K, IWAE_LATENT)
      z = mean[:, None] + std[:, None] * eps
      logits = model.decode(z)
      log_px = -F.binary_cross_entropy_with_logits(
          logits, flat[:, None].expand_as(logits), reduction="none").sum(-1)
      log_pz = -0.5 * (z.square() + math.log(2 * math.pi)).sum(-1)
      log_qz = -0.5 * (eps.square() + logvar[:, None] + math.log(2 * math.pi)).sum(-1)
      bound = torch.logsumexp(log_px + log_pz - log_qz, dim=1) - math.log(IWAE_K)
      return -bound.mean()
    z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
    recon = F.binary_cross_entropy_with_logits(model.decode(z), flat, reduction="sum")
    kl = -0.5 * torch.sum(1 + logvar - mean.square() - logvar.exp())
    return (recon + kl) / x.shape[0]

  def run_epoch():
    perm = torch.randperm(data.shape[0])
    total = 0.0
    for i in range(steps):
      loss = loss_of(data[perm[i * batch_size:(i + 1) * batch_size]])
      opt.zero_grad(set_to_none=True)
      loss.backward()
      opt.step()
      total += loss.detach()
    losses_.append(float(total) / steps)

  _, times = _timed(run_epoch, epochs)
  seconds = statistics.median(times)
  return {"examples_per_s": steps * batch_size / seconds, "epoch_seconds": seconds,
          "final_loss": losses_[-1]}


def torch_official_example_throughput(images: np.ndarray, epochs: int, batch_size: int = 128,
                                      threads: int | None = None) -> dict:
  """Examples/s of the official PyTorch VAE example's training loop (pytorch/examples, vae/main.py).

  Its model (784-400-20, sigmoid decoder), loss (``F.binary_cross_entropy`` on
  probabilities, summed, plus the analytic KL), optimizer (Adam, lr 1e-3) and
  loop (a shuffling ``DataLoader``, ``loss.item()`` after every step), written
  here so that it runs offline: the images come from an in-memory
  ``TensorDataset`` instead of torchvision's per-item PIL decode, which only
  makes the reference faster than the original. This is the "PyTorch
  reference" of the batch-128 target; ``torch_throughput`` is our own tuned
  PyTorch loop, reported beside it.
  """
  import torch
  from torch import nn
  import torch.nn.functional as F
  from torch.utils.data import DataLoader, TensorDataset

  torch.manual_seed(0)
  torch.set_num_threads(threads or os.cpu_count())

  class VAE(nn.Module):
    def __init__(self):
      super().__init__()
      self.fc1, self.fc21, self.fc22 = nn.Linear(784, 400), nn.Linear(400, 20), nn.Linear(400, 20)
      self.fc3, self.fc4 = nn.Linear(20, 400), nn.Linear(400, 784)

    def forward(self, x):
      h1 = F.relu(self.fc1(x.view(-1, 784)))
      mu, logvar = self.fc21(h1), self.fc22(h1)
      z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
      return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar

  model = VAE()
  optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
  data = torch.from_numpy(images.reshape(len(images), 1, 28, 28).astype(np.float32))
  loader = DataLoader(TensorDataset(data), batch_size=batch_size, shuffle=True)
  losses_ = []

  def run_epoch():
    model.train()
    train_loss = 0.0
    for (x,) in loader:
      optimizer.zero_grad()
      recon, mu, logvar = model(x)
      bce = F.binary_cross_entropy(recon, x.view(-1, 784), reduction="sum")
      kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
      loss = bce + kld
      loss.backward()
      train_loss += loss.item()
      optimizer.step()
    losses_.append(train_loss / len(loader.dataset))

  _, times = _timed(run_epoch, epochs)
  seconds = statistics.median(times)
  return {"examples_per_s": len(data) / seconds, "epoch_seconds": seconds, "final_loss": losses_[-1]}


def _rows(args):
  """(name, model, batch, width, num_examples) of every timed configuration."""
  rows = []
  models = args.models.split(",")
  batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
  if "mlp" in models:
    rows += [(f"mlp b{b}", "mlp", b, HIDDEN, args.num_examples) for b in batch_sizes]
    widths = [int(w) for w in args.widths.split(",")] if args.widths else []
    rows += [(f"mlp b{max(batch_sizes)} w{w}", "mlp", max(batch_sizes), w, args.num_examples)
             for w in widths if w != HIDDEN]
  if "conv" in models:
    rows += [(f"conv b{args.conv_batch}", "conv", args.conv_batch, HIDDEN, args.conv_examples),
             (f"conv_xla b{args.conv_batch}", "conv_xla", args.conv_batch, HIDDEN,
              args.conv_examples // 4)]
  if "iwae" in models:
    rows += [(f"iwae k{IWAE_K} b{args.iwae_batch}", "iwae", args.iwae_batch, IWAE_HIDDEN,
              args.iwae_examples)]
  return rows


def gpu_targets(results: dict, iwae_row: str, check) -> dict:
  """The GPU targets, from the measured throughput: checked on a GPU, printed as projections elsewhere.

  One MNIST epoch: 60,000 images at the best MLP 784-400-20 rate (either batch
  size). Burda's schedule: 3,280 passes of 50,000 images at the IWAE row's rate.
  """
  on_gpu = jax.default_backend() == "gpu"
  mlp = [r["jax"]["examples_per_s"] for r in results.values()
         if r["model"] == "mlp" and r["width"] == HIDDEN]
  projections = {}
  if mlp:
    projections["mnist_epoch_seconds"] = MNIST_EPOCH / max(mlp)
  if iwae_row in results:
    projections["burda_schedule_minutes"] = (
        BURDA_PASSES * BURDA_TRAIN_EXAMPLES / results[iwae_row]["jax"]["examples_per_s"] / 60)
  texts = {"mnist_epoch_seconds": (TARGET_GPU_EPOCH_S, "{:.2f} s",
                                   f"MLP VAE: one epoch of {MNIST_EPOCH:,} images"),
           "burda_schedule_minutes": (TARGET_GPU_BURDA_MIN, "{:,.0f} min",
                                      f"IWAE k = {IWAE_K}: Burda's schedule, {BURDA_PASSES:,} "
                                      f"passes of {BURDA_TRAIN_EXAMPLES:,} images")}
  for key, value in projections.items():
    target, fmt, text = texts[key]
    text = (f"{text} takes {fmt.format(value)} at this rate "
            f"(GPU target < {fmt.format(target)})")
    if on_gpu:
      check(f"gpu_{key}", value < target, text)
    else:
      print(f"{text}: reported (checked on a GPU)")
  return projections


def torch_version(skip: bool) -> str | None:
  """PyTorch's version, or None (after saying how to install it) when skipped or missing."""
  if skip:
    return None
  try:
    import torch
  except ImportError:
    print("PyTorch is not installed: timing JAX only. For the comparison, install the CPU build "
          f"with `pip install {TORCH_PIN}` (this exact pin; an unpinned install pulls GBs of "
          "CUDA wheels).\n")
    return None
  return torch.__version__


def machine_info(torch_version: str | None, torch_threads: int) -> dict:
  """The machine a benchmark ran on, printed, with a warning when the CPU is busy."""
  machine = {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
             "jax_version": jax.__version__, "jax_backend": jax.default_backend(),
             "device": jax.devices()[0].device_kind,
             "torch_version": torch_version, "torch_threads": torch_threads,
             "load_average_1min": os.getloadavg()[0]}
  print(f"machine: {machine}")
  if machine["load_average_1min"] > 1.0:
    print("warning: the CPU is busy (load average above 1): timings will be low and noisy, "
          "PyTorch's most of all (its threads wait on each other when cores are shared)")
  return machine


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--models", default="mlp,conv,iwae", help="comma-separated: mlp, conv, iwae")
  parser.add_argument("--batch_sizes", default="128,1024", help="MLP batch sizes")
  parser.add_argument("--widths", default="100,200,800,1600",
                      help="extra MLP hidden widths, timed at the largest batch size ('' = none)")
  parser.add_argument("--epochs", type=int, default=3, help="timed (steady) epochs per run")
  parser.add_argument("--num_examples", type=int, default=60000, help="synthetic images (MLP)")
  parser.add_argument("--conv_batch", type=int, default=128)
  parser.add_argument("--conv_examples", type=int, default=8192,
                      help="images per conv epoch (lax.conv gets a quarter of them)")
  parser.add_argument("--iwae_batch", type=int, default=100)
  parser.add_argument("--iwae_examples", type=int, default=6000)
  parser.add_argument("--out", default="benchmarks/results/throughput.json", help="JSON results")
  parser.add_argument("--skip_torch", action="store_true", help="time the JAX side only")
  parser.add_argument("--matmul_dtype", default="float32", choices=("float32", "bfloat16"),
                      help="the JAX models' matmul dtype (model.matmul_dtype; bfloat16: mlp and iwae "
                           "only); PyTorch stays float32, FLOPs are counted the same")
  parser.add_argument("--individual_dot", action="store_true",
                      help="compile the JAX steps with compilation.INDIVIDUAL_DOT (each matmul its own "
                           "library call) instead of XLA's defaults: the other column of the table in "
                           "vae_jax/compilation.py")
  parser.add_argument("--torch_threads", type=int, default=os.cpu_count(),
                      help="PyTorch's intra-op threads (1 is the fairer setting on shared cores)")
  args = parser.parse_args()
  rows = _rows(args)
  if args.epochs < 1 or not rows or any(b < 1 or b > n for _, _, b, _, n in rows):
    parser.error("need --epochs >= 1, a known model, and batch sizes no larger than the examples")
  if args.matmul_dtype != "float32" and any(m.startswith("conv") for _, m, *_ in rows):
    parser.error("--matmul_dtype=bfloat16 is for the MLP networks: pass --models mlp,iwae")
  if args.torch_threads < 1:
    parser.error(f"--torch_threads={args.torch_threads} must be >= 1")

  if args.individual_dot:
    compilation.COMPILER_OPTIONS.update(compilation.INDIVIDUAL_DOT)
  torch_ver = torch_version(args.skip_torch)
  rng = np.random.default_rng(0)
  images = (rng.random((max(n for *_, n in rows), *IMAGE_SHAPE)) < 0.5).astype(np.uint8)
  machine = machine_info(torch_ver, args.torch_threads)
  peak = matmul_peak()
  for lib in ("jax", "numpy"):
    print(f"fp32 matmul GFLOP/s ({lib}): {_per_size(peak[lib])}")
  print(f"peak (best jax): {peak['peak_gflops']:.1f} GFLOP/s (measured again after the runs)\n")

  results = {}
  for name, model_name, b, width, n in rows:
    r = {"model": model_name, "batch_size": b, "width": width, "num_examples": n,
         "train_mflop_per_example": train_flops(model_name, width) / 1e6}
    r["jax"] = jax_throughput(images[:n], b, args.epochs, model_name, width, args.matmul_dtype)
    r["jax_gflops"] = r["jax"]["examples_per_s"] * train_flops(model_name, width) / 1e9
    if torch_ver and model_name != "conv_xla":
      r["torch"] = torch_throughput(images[:n], b, args.epochs, model_name, width, args.torch_threads)
      r["ratio"] = r["jax"]["examples_per_s"] / r["torch"]["examples_per_s"]
    if torch_ver and name == "mlp b128":
      r["torch_official_example"] = torch_official_example_throughput(images[:n], args.epochs,
                                                                      threads=args.torch_threads)
      r["ratio_vs_official_example"] = (r["jax"]["examples_per_s"]
                                        / r["torch_official_example"]["examples_per_s"])
    results[name] = r
    print(f"  {name}: {r['jax']['examples_per_s']:.0f} ex/s", flush=True)

  # The peak again, after the runs: the fractions use the higher of the two, so
  # that a machine slower during the runs than before them lowers them, not raises.
  peak_after = matmul_peak()
  peak["peak_gflops_before"] = peak["peak_gflops"]
  peak["peak_gflops_after"] = peak_after["peak_gflops"]
  peak["after"] = {"jax": peak_after["jax"], "numpy": peak_after["numpy"]}
  peak["peak_gflops"] = max(peak["peak_gflops_before"], peak["peak_gflops_after"])
  print(f"\npeak (best jax) after the runs: {peak['peak_gflops_after']:.1f} GFLOP/s "
        f"({_per_size(peak_after['jax'])}); fractions below are of the higher, "
        f"{peak['peak_gflops']:.1f}")
  for r in results.values():
    r["fraction_of_peak"] = r["jax_gflops"] / peak["peak_gflops"]

  header = (f"{'run':>16} {'MFLOP/ex':>8} {'jax ex/s':>10} {'torch ex/s':>10} {'ratio':>6} "
            f"{'GFLOP/s':>8} {'of peak':>7} {'compile s':>9} {'jax loss':>8} {'torch loss':>10}")
  print("\n" + header + "\n" + "-" * len(header))
  for name, r in results.items():
    t = r.get("torch")
    torch_cols = ((f"{t['examples_per_s']:.0f}", f"{r['ratio']:.2f}x", f"{t['final_loss']:.1f}")
                  if t else ("-", "-", "-"))
    print(f"{name:>16} {r['train_mflop_per_example']:>8.1f} {r['jax']['examples_per_s']:>10.0f} "
          f"{torch_cols[0]:>10} {torch_cols[1]:>6} {r['jax_gflops']:>8.1f} "
          f"{r['fraction_of_peak']:>7.1%} {r['jax']['compile_seconds']:>9.2f} "
          f"{r['jax']['final_loss']:>8.1f} {torch_cols[2]:>10}")

  print()
  checks = {}

  def check(key, ok, text):
    checks[key] = bool(ok)
    print(f"{text}: {'PASS' if ok else 'FAIL'}")

  if "mlp b128" in results and "ratio_vs_official_example" in results["mlp b128"]:
    r = results["mlp b128"]
    print(f"PyTorch at batch 128: the official example's loop {r['torch_official_example']['examples_per_s']:.0f} "
          f"ex/s, our tuned PyTorch loop {r['torch']['examples_per_s']:.0f} ex/s")
    check("mlp_ratio_at_128", r["ratio_vs_official_example"] >= TARGET_RATIO,
          f"MLP batch 128: {r['ratio_vs_official_example']:.2f}x the official PyTorch example "
          f"(target >= {TARGET_RATIO}x); {r['ratio']:.2f}x our tuned PyTorch loop (reported)")
  if "mlp b1024" in results:
    frac = results["mlp b1024"]["fraction_of_peak"]
    check("mlp_peak_at_1024", frac >= TARGET_PEAK_FRACTION,
          f"MLP batch 1024: {frac:.1%} of the matmul peak (target >= {TARGET_PEAK_FRACTION:.0%})")
  conv, conv_xla = f"conv b{args.conv_batch}", f"conv_xla b{args.conv_batch}"
  if conv in results and conv_xla in results:
    speedup = results[conv]["jax"]["examples_per_s"] / results[conv_xla]["jax"]["examples_per_s"]
    results[conv]["speedup_over_lax_conv"] = speedup
    check("conv_speedup", speedup >= TARGET_CONV_SPEEDUP,
          f"conv VAE: patches + matmul {speedup:.1f}x lax.conv (target >= {TARGET_CONV_SPEEDUP}x)")
    if "ratio" in results[conv]:
      print(f"conv VAE: {results[conv]['ratio']:.2f}x PyTorch (reported; aim > 1)")
  projections = gpu_targets(results, f"iwae k{IWAE_K} b{args.iwae_batch}", check)

  out = Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps({"machine": machine, "args": vars(args), "matmul": peak,
                             "runs": results, "projections": projections,
                             "targets_met": checks}, indent=2) + "\n")
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
