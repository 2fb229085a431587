"""Time of importance-sampled evaluation (K = 5000) of Burda et al.'s MLP VAE, against the matmul peak.

    python -m benchmarks.evaluation [--num_images 10000] [--num_samples 5000]
                                    [--compare_options] [--skip_torch]
                                    [--out benchmarks/results/evaluation.json]

The model is ``vae_jax/configs/burda_vae.py`` (784-200-200-50 tanh,
Bernoulli) with freshly initialized parameters (the cost does not depend on
their values) on static binarized MNIST test images, or on synthetic binary
images with ``--synthetic``. The timed call is ``vae_jax.evaluation.evaluate``,
which the evaluation entry point runs; compilation is excluded (one small
call first, same shapes).

The decoder's FLOPs per sample (2 x the multiply-adds of 50->200->200->784)
times images x K is the work the estimate cannot avoid (about 21 TFLOP for
10,000 images and K = 5000); it is printed against the measured float32
matmul peak. ``--compare_options`` also times a slice compiled with
``compilation.INDIVIDUAL_DOT`` and with 25,000 samples per step (see
``vae_jax/compilation.py``), and PyTorch (CPU) runs the same
estimator (same network, K samples per image in chunks, logsumexp) on a slice,
extrapolated per sample.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.throughput import matmul_peak
from vae_jax.configs import burda_vae
from vae_jax import compilation
from vae_jax import config as config_lib
from vae_jax import data as data_lib
from vae_jax import evaluation as eval_lib
from vae_jax import models

HIDDEN, LATENT, PIXELS = 200, 50, 784
DECODER_FLOPS = 2 * (LATENT * HIDDEN + HIDDEN * HIDDEN + HIDDEN * PIXELS)
TARGET_SECONDS = 130.0


def _images(num_images: int, synthetic: bool) -> np.ndarray:
  if synthetic:
    rng = np.random.default_rng(0)
    return (rng.random((num_images, 28, 28, 1)) < 0.13).astype(np.uint8)
  config = burda_vae.get_config()
  return data_lib.load_split(config.data, "test").images[:num_images]


def time_jax(model, params, images, num_samples, batch_size, chunk_size) -> float:
  kw = dict(key=jax.random.key(0), mode="static", num_samples=num_samples,
            batch_size=batch_size, chunk_size=chunk_size)
  eval_lib.evaluate(model, params, images[:batch_size], **kw)  # compile
  t0 = time.perf_counter()
  eval_lib.evaluate(model, params, images, **kw)
  return time.perf_counter() - t0


def time_torch(params, images, num_samples, chunk_size) -> float:
  """Seconds of the same estimator in PyTorch (no_grad, float32) on ``images``."""
  import torch

  torch.set_num_threads(os.cpu_count())
  p = jax.tree.map(lambda a: torch.from_numpy(np.array(a)), params)
  enc = [p["enc_trunk0"]["dense_0"], p["enc_trunk0"]["dense_1"]]
  dec = [p["dec_trunk0"]["dense_0"], p["dec_trunk0"]["dense_1"], p["dec_out"]]
  head = p["enc_heads_0"]
  x = torch.from_numpy(images.reshape(len(images), -1).astype(np.float32))
  t0 = time.perf_counter()
  with torch.no_grad():
    h = x
    for layer in enc:
      h = torch.tanh(h @ layer["kernel"] + layer["bias"])
    mean = h @ head["mean"]["kernel"] + head["mean"]["bias"]
    logvar = h @ head["logvar"]["kernel"] + head["logvar"]["bias"]
    std = torch.exp(0.5 * logvar)
    lse = torch.full((len(images),), -math.inf)
    for _ in range(math.ceil(num_samples / chunk_size)):
      eps = torch.randn(len(images), chunk_size, LATENT)
      z = mean[:, None] + std[:, None] * eps
      h = z
      for layer in dec[:2]:
        h = torch.tanh(h @ layer["kernel"] + layer["bias"])
      logits = h @ dec[2]["kernel"] + dec[2]["bias"]
      log_px = (x[:, None] * logits - torch.nn.functional.softplus(logits)).sum(-1)
      log_pz = -0.5 * (z.square() + math.log(2 * math.pi)).sum(-1)
      log_qz = -0.5 * (eps.square() + logvar[:, None] + math.log(2 * math.pi)).sum(-1)
      lse = torch.logaddexp(lse, torch.logsumexp(log_px + log_pz - log_qz, dim=1))
  return time.perf_counter() - t0


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--num_images", type=int, default=10000)
  parser.add_argument("--num_samples", type=int, default=5000)
  parser.add_argument("--batch_size", type=int, default=100)
  parser.add_argument("--chunk_size", type=int, default=250)
  parser.add_argument("--synthetic", action="store_true", help="random images instead of MNIST")
  parser.add_argument("--compare_options", action="store_true",
                      help="also time a slice with INDIVIDUAL_DOT and with larger steps")
  parser.add_argument("--skip_torch", action="store_true")
  parser.add_argument("--out", default="benchmarks/results/evaluation.json")
  args = parser.parse_args()
  if min(args.num_images, args.num_samples, args.batch_size, args.chunk_size) < 1:
    parser.error("all sizes must be >= 1")

  config = burda_vae.get_config()
  model = config_lib.make_model(config)
  params = models.init_params(model, jax.random.key(0))
  images = _images(args.num_images, args.synthetic)
  machine = {"cpu_count": os.cpu_count(), "jax_version": jax.__version__,
             "backend": jax.default_backend(), "device": jax.devices()[0].device_kind,
             "load_average_1min": os.getloadavg()[0]}
  print(f"machine: {machine}")
  peak = matmul_peak()["peak_gflops"]
  seconds = time_jax(model, params, images, args.num_samples, args.batch_size, args.chunk_size)
  flops = DECODER_FLOPS * len(images) * args.num_samples
  result = {"machine": machine, "args": vars(args), "matmul_peak_gflops": peak,
            "images_per_step": eval_lib._images_per_step(args.batch_size, min(args.chunk_size, args.num_samples)),
            "decoder_tflop": flops / 1e12, "seconds": seconds,
            "seconds_at_peak": flops / (peak * 1e9), "fraction_of_peak": flops / seconds / (peak * 1e9)}
  print(f"jax: {len(images)} images x K={args.num_samples} ({result['images_per_step']} images x {min(args.chunk_size, args.num_samples)} samples per step): {seconds:.1f} s; decoder "
        f"{flops / 1e12:.1f} TFLOP = {result['fraction_of_peak']:.0%} of the {peak:.0f} GFLOP/s "
        f"matmul peak ({result['seconds_at_peak']:.0f} s at peak)")

  slice_ = images[:min(100, len(images))]
  per_sample = lambda s, n: s / (n * args.num_samples)
  if args.compare_options:
    # The same step compiled with INDIVIDUAL_DOT, and with the old step size of
    # 100 images x 250 samples (eval_lib.MAX_SAMPLES_PER_STEP lifted).
    saved = eval_lib._batch_stats, eval_lib.MAX_SAMPLES_PER_STEP
    variants = {"individual_dot": (compilation.INDIVIDUAL_DOT, saved[1]),
                "individual_dot_25k_per_step": (compilation.INDIVIDUAL_DOT, 25000),
                "xla_defaults_25k_per_step": ({}, 25000)}
    for name, (options, cap) in variants.items():
      eval_lib._batch_stats = compilation.jit(eval_lib._batch_stats_fn, static_argnames=eval_lib._STATIC,
                                              options=options)
      eval_lib.MAX_SAMPLES_PER_STEP = cap
      try:
        s = time_jax(model, params, slice_, args.num_samples, 100, args.chunk_size)
      finally:
        eval_lib._batch_stats, eval_lib.MAX_SAMPLES_PER_STEP = saved
      result[f"{name}_seconds_extrapolated"] = per_sample(s, len(slice_)) * len(images) * args.num_samples
      print(f"jax, {name}: {result[f'{name}_seconds_extrapolated']:.0f} s "
            f"(extrapolated from {len(slice_)} images)")
  if not args.skip_torch:
    try:
      s = time_torch(params, slice_, args.num_samples, args.chunk_size)
      result["torch_seconds_extrapolated"] = per_sample(s, len(slice_)) * len(images) * args.num_samples
      result["ratio_vs_torch"] = result["torch_seconds_extrapolated"] / seconds
      print(f"torch: {result['torch_seconds_extrapolated']:.0f} s (extrapolated from "
            f"{len(slice_)} images): jax is {result['ratio_vs_torch']:.2f}x faster")
    except ImportError:
      print("PyTorch not installed (pip install torch==2.13.0): skipped")
  if len(images) == 10000 and args.num_samples == 5000:
    result["target_met"] = seconds < TARGET_SECONDS
    print(f"target < {TARGET_SECONDS:.0f} s: {'PASS' if result['target_met'] else 'FAIL'}")
  out = Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(result, indent=2) + "\n")
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
