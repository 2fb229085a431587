"""Speed of the VQ-VAE training step and of PixelCNN sampling, in JAX and in PyTorch, against the matmul peak.

    python -m benchmarks.vq [--parts train,sample] [--num_examples 2000] [--epochs 2]
                            [--num_samples 64] [--sample_repeats 2] [--skip_torch]
                            [--skip_cost_analysis] [--out benchmarks/results/vq.json]

Models: ``vae_jax/configs/vq/vqvae_mnist.py`` (stride-2 4x4 convolutions,
2 residual blocks, 7x7 grid of K = 64 codes, D = 16, Bernoulli likelihood,
EMA codebook with dead-code restarts, batch 100) and the gated PixelCNN of
``vae_jax/configs/vq/prior_mnist.py`` (8 gated layers of 32 channels) on
its 7x7 grids, both with freshly initialized parameters (the cost does not
depend on their values) and synthetic binary images, so no trained workdir is
needed.

* train: examples/s of steady epochs of the library's own jitted epoch, as
  ``vae_jax.vq.train`` runs it (``loop.make_epoch`` over ``vq_train.train_step``:
  one ``lax.scan`` per epoch, donated state, EMA codebook update and restarts
  inside the step), against the same network, loss (-log p(x|z_q) +
  beta ||z_e - sg(e)||^2, straight-through, EMA codebook, restarts) and Adam
  written directly in PyTorch, starting from the same parameters (the first
  batch's loss is printed on both sides as a check that the models agree).
* sample: seconds to draw ``--num_samples`` code grids with the library's
  ancestral sampler (``vq_prior.sample_images``: one compiled ``fori_loop``
  over the 49 positions, a full forward pass per position) and decode them to
  images, against PyTorch doing the same the way common PyTorch PixelCNN
  implementations do (a Python loop over positions, re-running the network on
  the whole grid each time, ``torch.multinomial``), with the same weights (the
  logits of both are compared on a random grid).

FLOPs, counted by hand from the architecture (``vqvae_forward_macs``,
``pixelcnn_forward_macs``) with throughput.py's convention: 2 x the
multiply-adds of the convolutions and matmuls that are computed (masked
PixelCNN kernel taps included, since both libraries compute them; the
nearest-code distance matmul included); a training example costs 3x its
forward pass. XLA's own count for one compiled training step
(``lower(...).compile().cost_analysis()``, which also counts elementwise work
and the patches' copies) is printed beside it. Achieved GFLOP/s is compared
with the best steady float32 matmul (``benchmarks.throughput.matmul_peak``).
Compilation is reported apart: the first call's time minus a steady one's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import throughput
from benchmarks.throughput import matmul_peak
from vae_jax.configs.vq import prior_mnist
from vae_jax.configs.vq import vqvae_mnist
from vae_jax import config as config_lib
from vae_jax import loop
from vae_jax.vq import pixelcnn
from vae_jax import train
from vae_jax.vq import config as vq_config
from vae_jax.vq import train as vq_train
from vae_jax.vq import vqvae
from vae_jax.vq import train_prior as vq_prior


def _timed(fn, repeats: int) -> tuple[float, list[float], list[float]]:
  """(seconds of the first call, wall seconds and CPU seconds of each of ``repeats`` later calls).

  CPU seconds (all threads of this process) say what a call costs when the
  cores are shared and wall time mostly measures waiting.
  """
  times, cpu = [], []
  for _ in range(repeats + 1):
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    times.append(time.perf_counter() - t0)
    cpu.append(time.process_time() - c0)
  return times[0], times[1:], cpu[1:]


# -- FLOPs ------------------------------------------------------------------------

def _encoder_macs(m) -> tuple[int, int, int]:
  """(multiply-adds of the encoder, grid h, grid w) for one image."""
  h, w, cin = m.image_shape
  macs = 0
  for i in range(m.num_downsamples):
    width = m.hidden if i == m.num_downsamples - 1 else max(1, m.hidden // 2)
    h, w = h // 2, w // 2
    macs += h * w * 16 * cin * width
    cin = width
  macs += h * w * 9 * cin * m.hidden
  macs += m.num_residual_blocks * h * w * (9 * m.hidden * m.residual_hidden + m.residual_hidden * m.hidden)
  macs += h * w * m.hidden * m.code_dim
  return macs, h, w


def _decoder_macs(m) -> int:
  """Multiply-adds of the decoder for one grid (transposed convs: k x k x Cin x Cout per input pixel)."""
  h, w = m.grid_shape
  macs = h * w * 9 * m.code_dim * m.hidden
  macs += m.num_residual_blocks * h * w * (9 * m.hidden * m.residual_hidden + m.residual_hidden * m.hidden)
  cin = m.hidden
  for i in range(m.num_downsamples):
    last = i == m.num_downsamples - 1
    width = m.image_shape[-1] if last else max(1, m.hidden // 2)  # bernoulli: one output per channel
    macs += h * w * 16 * cin * width
    h, w, cin = 2 * h, 2 * w, width
  return macs


def vqvae_forward_macs(m) -> int:
  """Multiply-adds of one image's forward pass: encoder, nearest-code distances, decoder."""
  enc, h, w = _encoder_macs(m)
  return enc + h * w * m.code_dim * m.num_codes + _decoder_macs(m)


def pixelcnn_forward_macs(p) -> int:
  """Multiply-adds of one forward pass of the gated PixelCNN on one grid (masked taps included)."""
  h, w = p.grid_shape
  f, k = p.features, p.kernel_size
  per_layer = k * k * f * 2 * f + k * f * 2 * f + 2 * f * 2 * f + f * f
  return h * w * (p.num_codes * f + p.num_layers * per_layer + f * p.output_features
                  + p.output_features * p.num_codes)


# -- JAX --------------------------------------------------------------------------

def vq_configs():
  config = vqvae_mnist.get_config()
  vq_config.validate_vqvae(config)
  return config, prior_mnist.get_config()


def _vq_step(config, model):
  return jax.tree_util.Partial(
      vq_train.train_step, model=model, loss_fn=vq_train.make_loss(config), mode=config.data.mode,
      ema=config.vq.ema, decay=config.vq.decay, epsilon=config.vq.epsilon,
      restart=config.vq.restart, dead_threshold=config.vq.dead_threshold)


def _new_state(config, model, steps: int, epochs: int):
  tx = config_lib.make_optimizer(config.optimizer,
                                 config_lib.make_schedule(config.optimizer, steps, epochs + 1))
  keys = train.RunKeys.from_seed(config.seed)
  return keys, vq_train.create_train_state(model, keys.init, tx)


def first_batch_loss(config, model, params, images: np.ndarray) -> float:
  """The mean VQ-VAE loss of ``images`` at ``params`` (the library's per-example loss)."""
  loss_fn = vq_train.make_loss(config)
  x = jnp.asarray(images, jnp.float32)
  per_example = jax.jit(jax.vmap(lambda xi: loss_fn(model, params, xi, None)[0]))
  return float(jnp.mean(per_example(x)))


def jax_train(config, model, images: np.ndarray, epochs: int, cost_analysis: bool) -> dict:
  """Examples/s of steady epochs of the library's VQ-VAE epoch, compile seconds, XLA's FLOP count."""
  b = config.batch_size
  steps = images.shape[0] // b
  keys, state = _new_state(config, model, steps, epochs)
  step = _vq_step(config, model)
  out = {"initial_loss": first_batch_loss(config, model, state.params, images[:b])}
  if cost_analysis:  # one step compiled apart: XLA counts a scan's body once, not per trip
    compiled = jax.jit(step).lower(state, jnp.asarray(images[:b]), keys.train).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    out["xla_mflop_per_example"] = float(cost["flops"]) / b / 1e6
  epoch_fn = loop.make_epoch(step, b)
  data = jax.device_put(jnp.asarray(images, jnp.uint8))
  epoch, loss = 0, None

  def run_epoch():
    nonlocal state, epoch, loss
    epoch += 1
    state, metrics = jax.block_until_ready(epoch_fn(state, data, epoch, keys.train, keys.data))
    loss = float(np.mean(metrics["loss"]))

  first, times, cpu = _timed(run_epoch, epochs)
  seconds = statistics.median(times)
  out.update(examples_per_s=steps * b / seconds, epoch_seconds=seconds,
             examples_per_cpu_s=steps * b / statistics.median(cpu),
             compile_seconds=first - seconds, final_loss=loss)
  return out


def jax_sample(vq_model, vq_params, prior, prior_params, num_samples: int, repeats: int) -> dict:
  """Seconds to draw and decode ``num_samples`` grids with ``vq_prior.sample_images``."""
  key = jax.random.key(0)
  calls = 0

  def draw():
    nonlocal calls
    calls += 1
    jax.block_until_ready(vq_prior.sample_images(vq_model, vq_params, prior, prior_params,
                                                 jax.random.fold_in(key, calls), num_samples))

  first, times, cpu = _timed(draw, repeats)
  seconds = statistics.median(times)
  return {"seconds": seconds, "cpu_seconds": statistics.median(cpu), "compile_seconds": first - seconds}


# -- PyTorch ----------------------------------------------------------------------

def _to_torch_conv(layer, transpose: bool = False, mask=None):
  """Flax kernel [kh, kw, in, out] -> PyTorch (weight, bias) of Conv2d / ConvTranspose2d."""
  import torch
  k = np.asarray(layer["kernel"], np.float32)
  if mask is not None:
    k = k * mask
  if transpose:  # lax.conv_transpose without kernel flip = PyTorch's transposed conv of the flipped kernel
    w = k[::-1, ::-1].transpose(2, 3, 0, 1)
  else:
    w = k.transpose(3, 2, 0, 1)
  return (torch.nn.Parameter(torch.from_numpy(np.ascontiguousarray(w))),
          torch.nn.Parameter(torch.from_numpy(np.array(layer["bias"], np.float32))))


def _torch_vqvae(model, params):
  """The VQ-VAE as PyTorch modules holding ``params`` (NCHW); the codebook is a plain tensor."""
  import torch
  from torch import nn
  import torch.nn.functional as F

  def conv(layer, stride=1, padding=0, transpose=False):
    k = np.asarray(layer["kernel"])
    cls = nn.ConvTranspose2d if transpose else nn.Conv2d
    mod = cls(k.shape[2], k.shape[3], k.shape[:2], stride=stride, padding=padding)
    mod.weight, mod.bias = _to_torch_conv(layer, transpose)
    return mod

  class Residual(nn.Module):
    def __init__(self, p):
      super().__init__()
      n = model.num_residual_blocks
      self.conv3 = nn.ModuleList(conv(p[f"res_{i}_conv3"], padding=1) for i in range(n))
      self.conv1 = nn.ModuleList(conv(p[f"res_{i}_conv1"]) for i in range(n))

    def forward(self, h):
      for c3, c1 in zip(self.conv3, self.conv1):
        h = h + c1(F.relu(c3(F.relu(h))))
      return F.relu(h)

  class Encoder(nn.Module):
    def __init__(self, p):
      super().__init__()
      self.down = nn.ModuleList(conv(p[f"down_{i}"], 2, 1) for i in range(model.num_downsamples))
      self.conv_in, self.res = conv(p["conv_in"], padding=1), Residual(p["res"])
      self.to_codes = conv(p["to_codes"])

    def forward(self, x):
      for d in self.down:
        x = F.relu(d(x))
      return self.to_codes(self.res(self.conv_in(x)))

  class Decoder(nn.Module):
    def __init__(self, p):
      super().__init__()
      self.conv_in, self.res = conv(p["conv_in"], padding=1), Residual(p["res"])
      self.up = nn.ModuleList(conv(p[f"up_{i}"], 2, 1, transpose=True)
                              for i in range(model.num_downsamples))

    def forward(self, z):
      h = self.res(self.conv_in(z))
      for i, u in enumerate(self.up):
        h = u(h)
        if i < len(self.up) - 1:
          h = F.relu(h)
      return h

  codebook = torch.from_numpy(np.array(params["quantizer"]["codebook"], np.float32))
  return Encoder(params["encoder"]), Decoder(params["decoder"]), codebook


def _torch_nearest(z, codebook):
  """Nearest-code indices of z [N, D] by ||z||^2 - 2 z.e + ||e||^2."""
  import torch
  d = z.square().sum(1, keepdim=True) - 2 * z @ codebook.T + codebook.square().sum(1)
  return torch.argmin(d, dim=1)


def torch_vq_loss(encoder, decoder, codebook, x, *, beta: float):
  """(mean loss, encoder outputs [N, D] detached, their codes [N]) of a batch x [B, C, H, W]:
  -log p(x|z_q) (Bernoulli) + beta ||z_e - sg(e)||^2 with the straight-through output (EMA codebook:
  no codebook term)."""
  import torch.nn.functional as F
  z = encoder(x).permute(0, 2, 3, 1)  # [B, h, w, D]
  flat = z.reshape(-1, z.shape[-1])
  idx = _torch_nearest(flat.detach(), codebook)
  z_q = codebook[idx].view_as(z)
  st = z + (z_q - z).detach()
  logits = decoder(st.permute(0, 3, 1, 2))
  recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum((1, 2, 3))
  commitment = (z - z_q.detach()).square().sum((1, 2, 3))
  return (recon + beta * commitment).mean(), flat.detach(), idx


def torch_train(config, model, params, images: np.ndarray, epochs: int, threads: int) -> dict:
  """Examples/s of steady epochs (after one warm-up) of the same VQ-VAE step written in PyTorch."""
  import torch
  import torch.nn.functional as F

  torch.manual_seed(0)
  torch.set_num_threads(threads)
  encoder, decoder, codebook = _torch_vqvae(model, params)
  modules = torch.nn.ModuleList([encoder, decoder])
  o = config.optimizer
  opt = torch.optim.Adam(modules.parameters(), lr=o.learning_rate, betas=(o.b1, o.b2), eps=o.eps)
  k = model.num_codes
  beta, decay, eps, threshold = config.vq.beta, config.vq.decay, config.vq.epsilon, config.vq.dead_threshold
  count, embed_sum = torch.ones(k), codebook.clone()
  data = torch.from_numpy(images.transpose(0, 3, 1, 2).astype(np.float32))  # NCHW
  b = config.batch_size
  steps = data.shape[0] // b
  losses_ = []

  def loss_of(x):
    return torch_vq_loss(encoder, decoder, codebook, x, beta=beta)

  def step(x):
    nonlocal codebook, count, embed_sum
    loss, flat, idx = loss_of(x)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    with torch.no_grad():  # EMA codebook (Laplace-smoothed counts), then dead-code restarts
      onehot = F.one_hot(idx, k).float()
      count = decay * count + (1 - decay) * onehot.sum(0)
      embed_sum = decay * embed_sum + (1 - decay) * onehot.T @ flat
      total = count.sum()
      codebook = embed_sum / ((count + eps) / (total + k * eps) * total)[:, None]
      candidates = flat[torch.randperm(flat.shape[0])[:k]]
      dead = count < threshold
      codebook = torch.where(dead[:, None], candidates, codebook)
      embed_sum = torch.where(dead[:, None], candidates, embed_sum)
      count = torch.where(dead, torch.ones_like(count), count)
    return loss.detach()

  with torch.no_grad():
    initial = float(loss_of(data[:b])[0])

  def run_epoch():
    perm = torch.randperm(data.shape[0])
    total = 0.0
    for i in range(steps):
      total += step(data[perm[i * b:(i + 1) * b]])
    losses_.append(float(total) / steps)

  _, times, cpu = _timed(run_epoch, epochs)
  seconds = statistics.median(times)
  return {"initial_loss": initial, "examples_per_s": steps * b / seconds, "epoch_seconds": seconds,
          "examples_per_cpu_s": steps * b / statistics.median(cpu), "final_loss": losses_[-1]}


def _torch_pixelcnn(prior, params):
  """The gated PixelCNN as a PyTorch module with ``params`` (masks folded into the kernels)."""
  import torch
  from torch import nn
  import torch.nn.functional as F

  k = prior.kernel_size

  def conv(layer, padding=0, mask=None):
    kernel = np.asarray(layer["kernel"])
    mod = nn.Conv2d(kernel.shape[2], kernel.shape[3], kernel.shape[:2], padding=padding)
    mod.weight, mod.bias = _to_torch_conv(layer, mask=mask)
    return mod

  def gate(a):
    x, y = a.chunk(2, dim=1)
    return torch.tanh(x) * torch.sigmoid(y)

  class GatedPixelCNN(nn.Module):
    def __init__(self):
      super().__init__()
      n = prior.num_layers
      self.embed = nn.Parameter(torch.from_numpy(np.array(params["embed"]["kernel"], np.float32)))
      self.v = nn.ModuleList(conv(params[f"v_conv_{l}"], k // 2, pixelcnn.vertical_mask(k, l == 0))
                             for l in range(n))
      self.h = nn.ModuleList(conv(params[f"h_conv_{l}"], (0, k // 2), pixelcnn.horizontal_mask(k, l == 0))
                             for l in range(n))
      self.v_to_h = nn.ModuleList(conv(params[f"v_to_h_{l}"]) for l in range(n))
      self.h_out = nn.ModuleList(conv(params[f"h_out_{l}"]) for l in range(n))
      self.out_hidden, self.out_logits = conv(params["out_hidden"]), conv(params["out_logits"])

    def forward(self, codes):  # int [N, h, w] -> logits [N, K, h, w]
      v = h = F.embedding(codes, self.embed).permute(0, 3, 1, 2)
      for l in range(len(self.v)):
        v_pre = self.v[l](v)
        h_pre = self.h[l](h) + self.v_to_h[l](v_pre)
        v = gate(v_pre)
        h_new = self.h_out[l](gate(h_pre))
        h = h_new if l == 0 else h + h_new
      return self.out_logits(F.relu(self.out_hidden(F.relu(h))))

  return GatedPixelCNN()


def torch_sample(vq_model, vq_params, prior, prior_params, num_samples: int, repeats: int,
                 threads: int) -> dict:
  """Seconds to draw and decode ``num_samples`` grids in PyTorch (naive ancestral loop), and the
  largest difference between its logits and the library's on a random grid (same weights)."""
  import torch

  torch.manual_seed(0)
  torch.set_num_threads(threads)
  net = _torch_pixelcnn(prior, prior_params).eval()
  _, decoder, codebook = _torch_vqvae(vq_model, vq_params)
  h, w = prior.grid_shape
  grid = np.random.default_rng(0).integers(0, prior.num_codes, (4, h, w)).astype(np.int32)
  with torch.no_grad():
    torch_logits = net(torch.from_numpy(grid).long()).permute(0, 2, 3, 1).numpy()
  jax_logits = np.asarray(jax.jit(lambda p, c: prior.apply({"params": p}, c))(prior_params, grid))

  def draw():
    with torch.no_grad():
      codes = torch.zeros(num_samples, h, w, dtype=torch.long)
      for i in range(h):
        for j in range(w):
          probs = torch.softmax(net(codes)[:, :, i, j], dim=1)
          codes[:, i, j] = torch.multinomial(probs, 1)[:, 0]
      z_q = codebook[codes].permute(0, 3, 1, 2)
      return torch.sigmoid(decoder(z_q))

  _, times, cpu = _timed(draw, repeats)
  return {"seconds": statistics.median(times), "cpu_seconds": statistics.median(cpu),
          "logits_max_abs_diff": float(np.max(np.abs(torch_logits - jax_logits)))}


# -- main -------------------------------------------------------------------------

def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--parts", default="train,sample", help="comma-separated: train, sample")
  parser.add_argument("--num_examples", type=int, default=2000, help="synthetic images per epoch")
  parser.add_argument("--epochs", type=int, default=2, help="timed (steady) epochs per run")
  parser.add_argument("--num_samples", type=int, default=64, help="code grids drawn per sampling call")
  parser.add_argument("--sample_repeats", type=int, default=2, help="timed sampling calls")
  parser.add_argument("--skip_cost_analysis", action="store_true",
                      help="skip XLA's FLOP count (one extra compilation of a training step)")
  parser.add_argument("--out", default="benchmarks/results/vq.json", help="JSON results")
  parser.add_argument("--skip_torch", action="store_true", help="time the JAX side only")
  parser.add_argument("--torch_threads", type=int, default=os.cpu_count(),
                      help="PyTorch intra-op threads (default: every core; 1 suffers far less "
                      "when the cores are shared)")
  args = parser.parse_args()
  parts = args.parts.split(",")
  config, prior_config = vq_configs()
  if (not parts or any(p not in ("train", "sample") for p in parts) or args.epochs < 1
      or args.num_examples < config.batch_size or min(args.num_samples, args.sample_repeats,
                                                      args.torch_threads) < 1):
    parser.error(f"need --parts from train,sample, --epochs >= 1, --num_examples >= the batch size "
                 f"({config.batch_size}), --num_samples >= 1 and --sample_repeats >= 1")

  torch_version = throughput.torch_version(args.skip_torch)
  machine = throughput.machine_info(torch_version, args.torch_threads)
  peak = matmul_peak()
  print(f"peak (best jax fp32 matmul): {peak['peak_gflops']:.1f} GFLOP/s\n")
  peak_flops = peak["peak_gflops"] * 1e9

  model = vq_config.make_vqvae(config)
  results = {}
  if "train" in parts:
    rng = np.random.default_rng(0)
    images = (rng.random((args.num_examples, *model.image_shape)) < 0.13).astype(np.uint8)
    flops = 3 * 2 * vqvae_forward_macs(model)
    r = {"batch_size": config.batch_size, "num_examples": args.num_examples,
         "train_mflop_per_example": flops / 1e6}
    r["jax"] = jax_train(config, model, images, args.epochs, not args.skip_cost_analysis)
    r["jax_gflops"] = r["jax"]["examples_per_s"] * flops / 1e9
    r["fraction_of_peak"] = r["jax_gflops"] * 1e9 / peak_flops
    if torch_version:
      params = vqvae.init_params(model, train.RunKeys.from_seed(config.seed).init)  # the JAX start
      r["torch"] = torch_train(config, model, params, images, args.epochs, args.torch_threads)
      r["ratio"] = r["jax"]["examples_per_s"] / r["torch"]["examples_per_s"]
    results["vqvae_train"] = r
    j = r["jax"]
    print(f"VQ-VAE training step, batch {config.batch_size}: {flops / 1e6:.1f} MFLOP/example "
          f"(hand count, 3x forward)" + (f", XLA's count {j['xla_mflop_per_example']:.1f}"
                                         if "xla_mflop_per_example" in j else ""))
    print(f"  jax:   {j['examples_per_s']:8.0f} ex/s ({j['examples_per_cpu_s']:.0f} per CPU-s)  "
          f"{r['jax_gflops']:6.1f} GFLOP/s "
          f"({r['fraction_of_peak']:.1%} of peak)  compile {j['compile_seconds']:.1f} s  "
          f"first-batch loss {j['initial_loss']:.2f}, last epoch {j['final_loss']:.2f}")
    if "torch" in r:
      t = r["torch"]
      print(f"  torch: {t['examples_per_s']:8.0f} ex/s ({t['examples_per_cpu_s']:.0f} per CPU-s)  "
            f"first-batch loss {t['initial_loss']:.2f}, last epoch {t['final_loss']:.2f}")
      r["ratio_per_cpu_s"] = j["examples_per_cpu_s"] / t["examples_per_cpu_s"]
      print(f"  jax / torch: {r['ratio']:.2f}x ({r['ratio_per_cpu_s']:.2f}x per CPU-second)", flush=True)

  if "sample" in parts:
    prior = vq_config.make_prior(prior_config, model)
    vq_params = vqvae.init_params(model, jax.random.key(1))
    prior_params = pixelcnn.init_params(prior, jax.random.key(2))
    h, w = prior.grid_shape
    flops = args.num_samples * 2 * (h * w * pixelcnn_forward_macs(prior) + _decoder_macs(model))
    r = {"num_samples": args.num_samples, "positions": h * w, "gflop": flops / 1e9,
         "prior_mflop_per_forward_per_grid": 2 * pixelcnn_forward_macs(prior) / 1e6}
    r["jax"] = jax_sample(model, vq_params, prior, prior_params, args.num_samples, args.sample_repeats)
    r["jax_gflops"] = flops / r["jax"]["seconds"] / 1e9
    r["fraction_of_peak"] = r["jax_gflops"] * 1e9 / peak_flops
    if torch_version:
      r["torch"] = torch_sample(model, vq_params, prior, prior_params, args.num_samples,
                                args.sample_repeats, args.torch_threads)
      r["ratio"] = r["torch"]["seconds"] / r["jax"]["seconds"]
    results["pixelcnn_sample"] = r
    j = r["jax"]
    print(f"PixelCNN sampling, {args.num_samples} grids of {h}x{w} + decoding: {r['gflop']:.2f} GFLOP "
          f"({h * w} forward passes of {r['prior_mflop_per_forward_per_grid']:.1f} MFLOP per grid)")
    print(f"  jax:   {j['seconds']:7.3f} s ({j['cpu_seconds']:.3f} CPU-s)  {r['jax_gflops']:6.1f} GFLOP/s "
          f"({r['fraction_of_peak']:.1%} of peak)  compile {j['compile_seconds']:.1f} s")
    if "torch" in r:
      t = r["torch"]
      print(f"  torch: {t['seconds']:7.3f} s ({t['cpu_seconds']:.3f} CPU-s)  (logits agree with the "
            f"library's to {t['logits_max_abs_diff']:.1e})")
      r["ratio_per_cpu_s"] = t["cpu_seconds"] / j["cpu_seconds"]
      print(f"  jax is {r['ratio']:.2f}x faster ({r['ratio_per_cpu_s']:.2f}x in CPU-seconds)", flush=True)

  out = Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps({"machine": machine, "args": vars(args), "matmul": peak,
                             "runs": results}, indent=2) + "\n")
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
