"""Time of the per-epoch data work of the trainers: the shuffle and the batch gather.

    python -m benchmarks.data_ops [--num_examples 60000] [--batch_size 1024] [--repeats 9]
                                  [--out benchmarks/results/data_ops.json]

- shuffle: ``jax.random.permutation`` against ``vae_jax.data.permutation``
  (the same kind of shuffle, one single-array sort per round), jitted, one call;
- gather: one epoch of batches of uint8 MNIST-shaped images [N, 28, 28, 1] gathered
  by indexing the 4-D array against ``vae_jax.data.take_rows`` (the flat view),
  each batch converted to float32 and summed, in one ``lax.scan`` as the trainers do.

Prints the median of ``--repeats`` steady calls (compilation excluded) and the
speedups; writes JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import data as data_lib


def _median_seconds(fn, repeats: int) -> float:
  jax.block_until_ready(fn())  # compile
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def _gather_epoch(take):
  @jax.jit
  def epoch(images, batches):
    def body(total, idx):
      return total + jnp.sum(take(images, idx).astype(jnp.float32)), None
    return jax.lax.scan(body, jnp.float32(0), batches)[0]
  return epoch


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--num_examples", type=int, default=60000)
  parser.add_argument("--batch_size", type=int, default=1024)
  parser.add_argument("--repeats", type=int, default=9)
  parser.add_argument("--out", default="benchmarks/results/data_ops.json")
  args = parser.parse_args()
  n, b = args.num_examples, args.batch_size
  if not 1 <= b <= n or args.repeats < 1:
    parser.error("need 1 <= --batch_size <= --num_examples and --repeats >= 1")

  key = jax.random.key(0)
  shuffle = {
      "jax.random.permutation": jax.jit(jax.random.permutation, static_argnums=1),
      "data.permutation": jax.jit(data_lib.permutation, static_argnums=1),
  }
  results = {"shuffle_seconds": {name: _median_seconds(lambda f=f: f(key, n), args.repeats)
                                 for name, f in shuffle.items()}}

  rng = np.random.default_rng(0)
  images = jax.device_put((rng.random((n, 28, 28, 1)) < 0.5).astype(np.uint8))
  batches = data_lib.epoch_batch_indices(key, n, b)
  gathers = {"index the 4-D array": _gather_epoch(lambda a, idx: a[idx]),
             "data.take_rows": _gather_epoch(data_lib.take_rows)}
  sums = {name: float(g(images, batches)) for name, g in gathers.items()}
  if len(set(sums.values())) != 1:
    raise AssertionError(f"the two gathers disagree: {sums}")
  results["gather_epoch_seconds"] = {name: _median_seconds(lambda g=g: g(images, batches), args.repeats)
                                     for name, g in gathers.items()}

  print(f"{n} examples, batch {b}, {batches.shape[0]} batches; median of {args.repeats} calls")
  for part, timings in results.items():
    (old_name, old), (new_name, new) = timings.items()
    print(f"{part}: {old_name} {old * 1e3:.2f} ms, {new_name} {new * 1e3:.2f} ms ({old / new:.1f}x)")
  out = Path(args.out)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps({"jax_version": jax.__version__, "args": vars(args), **results},
                            indent=2) + "\n")
  print(f"wrote {out}")


if __name__ == "__main__":
  main()
