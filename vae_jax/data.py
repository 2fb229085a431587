"""Datasets: TFDS -> uint8 arrays (decoded once, cached) -> batches on the device.

Images are kept as uint8 [N, H, W, C] on the device for the whole run; a
batch is a gather by a jitted permutation and a per-batch transform that
depends on the binarization mode:

* ``static``: fixed binary images (``binarized_mnist`` as published by
  Larochelle & Murray; any other dataset binarized once from the data seed).
* ``dynamic``: a fresh Bernoulli draw of the grey levels for every batch, from
  an explicit key (each example is drawn anew every epoch).
* ``grey``: uniformly dequantized grey levels (x + u) / 256 in [0, 1).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import math
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

MODES = ("static", "dynamic", "grey")


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  image_shape: tuple[int, int, int]
  splits: dict  # our split name -> (tfds split, part): part "all", or "head"/"tail" of a held-out cut
  is_binary: bool = False  # pixels already in {0, 1}
  held_out: int = 10000  # size of the "tail" (at most a fifth of the tfds split)
  num_classes: int = 0  # classes of its labels (0: no labels)


def _held_out():
  return {"train": ("train", "head"), "validation": ("train", "tail"), "test": ("test", "all")}


DATASETS = {
    "binarized_mnist": DatasetSpec((28, 28, 1), {"train": ("train", "all"),
                                                 "validation": ("validation", "all"),
                                                 "test": ("test", "all")}, is_binary=True),
    "mnist": DatasetSpec((28, 28, 1), _held_out(), num_classes=10),
    "fashion_mnist": DatasetSpec((28, 28, 1), _held_out(), num_classes=10),
    "cifar10": DatasetSpec((32, 32, 3), _held_out(), num_classes=10),
}


class DataError(ValueError):
  """Data that cannot be used: missing, wrong shape, wrong range, non-finite."""


def cache_dir() -> Path:
  return Path(os.environ.get("VAE_JAX_CACHE", Path.home() / ".cache" / "vae_jax"))


def _tfds_data_dir(data_dir: str | None) -> str | None:
  return data_dir or os.environ.get("TFDS_DATA_DIR") or None


@functools.lru_cache(maxsize=16)
def _decode_tfds_split(name: str, tfds_split: str, data_dir: str | None, download: bool):
  """All images (uint8) and labels (int32 or None) of a TFDS split, decoded once."""
  import tensorflow_datasets as tfds  # heavy import, only when data is read
  try:
    source = tfds.data_source(name, split=tfds_split, data_dir=data_dir, download=download)
  except Exception as e:  # TFDS raises several types for a missing dataset
    where = data_dir or "the default TFDS data dir (~/tensorflow_datasets)"
    raise DataError(
        f"Cannot read TFDS dataset {name!r} split {tfds_split!r} from {where}: {e}\n"
        f"Either let TFDS download it (internet and config.data.download=True) or set "
        f"TFDS_DATA_DIR (or config.data.data_dir) to a directory holding a prepared copy."
    ) from e
  version = str(getattr(getattr(source, "dataset_info", None), "version", "unknown"))
  files = source_files(source, name, tfds_split)
  cache = cache_dir() / f"{name}-{version}-{tfds_split}-{len(source)}-{_fingerprint(files)}.npz"
  if cache.exists():
    try:
      with np.load(cache) as f:
        return f["images"], (f["labels"] if "labels" in f else None)
    except Exception:  # a corrupt cache is rebuilt, never trusted
      cache.unlink(missing_ok=True)
  try:
    try:
      records = source.__getitems__(list(range(len(source))))  # one batched read
    except TypeError:  # tfds.testing.mock_data's sources only index one record at a time
      records = [source[i] for i in range(len(source))]
    images = np.stack([np.asarray(r["image"], np.uint8) for r in records])
  except Exception as e:  # a truncated or damaged record file: Riegeli / decoding errors
    shown = ", ".join(str(f) for f in files) or (data_dir or "the default TFDS data dir")
    raise DataError(f"TFDS dataset {name!r} split {tfds_split!r} cannot be read: {type(e).__name__}: "
                    f"{str(e)[:300]}. Its files ({shown}) look damaged: prepare the dataset again "
                    "(delete it and let TFDS download it, or copy a good one).") from e
  labels = (np.asarray([r["label"] for r in records], np.int32)
            if records and "label" in records[0] else None)
  try:
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, images=images, **({} if labels is None else {"labels": labels}))
    os.replace(tmp, cache)  # atomic: a killed process never leaves a half-written cache
  except OSError as e:  # a read-only cache dir costs a re-decode next time, nothing more
    logging.getLogger(__name__).warning("cannot cache %s in %s: %s (set VAE_JAX_CACHE)", name, cache, e)
  return images, labels


def source_files(source, name: str, tfds_split: str) -> list[Path]:
  """The record files a TFDS data source reads for ``tfds_split`` (empty if TFDS does not say)."""
  info = getattr(source, "dataset_info", None)
  directory = getattr(info, "data_dir", None)
  if not directory or not Path(directory).is_dir():
    return []
  return sorted(Path(directory).glob(f"{name}-{tfds_split}.*"))


def _fingerprint(files: list[Path]) -> str:
  """A short hash of the files' paths, sizes and modification times: the decoded-array cache's key,
  so another copy of the data, or the same copy changed, is decoded afresh."""
  digest = hashlib.sha256()
  for f in files:
    st = f.stat()
    digest.update(f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
  return digest.hexdigest()[:12]


def check_images(images: np.ndarray, image_shape, *, what: str = "images", binary: bool = False) -> None:
  """Raises DataError unless images is [N, *image_shape] of integer grey levels in [0, 255]
  (in {0, 1} with ``binary``, as data.mode "static" needs)."""
  images = np.asarray(images)
  if images.ndim != 4 or tuple(images.shape[1:]) != tuple(image_shape):
    raise DataError(f"{what} have shape {images.shape}; expected [N, {', '.join(map(str, image_shape))}]")
  if images.shape[0] == 0:
    raise DataError(f"{what} are empty")
  if np.issubdtype(images.dtype, np.floating) and not np.all(np.isfinite(images)):
    bad = int(np.sum(~np.isfinite(images)))
    raise DataError(f"{what} contain {bad} non-finite values (NaN or inf)")
  lo, hi = float(images.min()), float(images.max())
  if lo < 0 or hi > 255:
    raise DataError(f"{what} have values in [{lo}, {hi}]; expected uint8 grey levels in [0, 255] "
                    "or binary {0, 1}")
  if np.issubdtype(images.dtype, np.floating) and not np.all(images == np.round(images)):
    raise DataError(f"{what} have non-integer values in [{lo}, {hi}]; expected uint8 grey levels in "
                    "[0, 255] (images scaled to [0, 1]? multiply by 255)")
  if binary and hi > 1:
    raise DataError(f"{what} have values up to {hi:g}, but config.data.mode='static' needs binary "
                    "images in {0, 1}: binarize them or use data.mode 'dynamic' or 'grey'")


def check_labels(labels, num_classes: int, num_images: int | None = None, *,
                 what: str = "labels") -> np.ndarray:
  """Class labels as int32 [N]; DataError unless they are integers in [0, num_classes).

  The one label check of the library (conditional VAE, classifier, semi-supervised
  learning). ``num_images``: the number of labels expected (None: any N).
  Integer-valued floats are accepted; NaN, fractions and out-of-range values
  are named with the offending values.
  """
  if labels is None:
    raise DataError(f"{what} are missing: one class index in [0, {num_classes}) per image is needed "
                    "(for a class-conditional model: a labelled dataset such as mnist, fashion_mnist "
                    "or cifar10, or config.model.num_classes=0)")
  labels = np.asarray(labels)
  if num_images is None and labels.ndim != 1:
    raise DataError(f"{what} have shape {labels.shape}; expected [N] class indices")
  if num_images is not None and labels.shape != (num_images,):
    raise DataError(f"{what} have shape {labels.shape}; expected ({num_images},): one label per image")
  if not np.issubdtype(labels.dtype, np.integer):
    if not np.issubdtype(labels.dtype, np.floating) or not np.all(labels == np.round(labels)):
      raise DataError(f"{what} have dtype {labels.dtype} with non-integer values; expected class "
                      f"indices in [0, {num_classes})")
  bad = (labels < 0) | (labels >= num_classes)
  if np.any(bad):
    values = sorted(set(labels[bad].tolist()))
    raise DataError(f"{what} lie in [{labels.min()}, {labels.max()}]; expected class indices in "
                    f"[0, {num_classes}) (num_classes={num_classes}): {int(np.sum(bad))} of them out "
                    f"of range (e.g. {values[:5]})")
  return labels.astype(np.int32)


@dataclasses.dataclass(frozen=True)
class Split:
  images: np.ndarray  # uint8 [N, H, W, C]; for mode "static", values in {0, 1}
  labels: np.ndarray | None


def load_split(data_config, split: str) -> Split:
  """One split of ``config.data`` as uint8 arrays (binarized once for "static")."""
  name = data_config.name
  if name not in DATASETS:
    raise DataError(f"config.data.name={name!r} is not a known dataset; choose one of {sorted(DATASETS)}")
  spec = DATASETS[name]
  if split not in spec.splits:
    raise DataError(f"split {split!r} is not one of {sorted(spec.splits)}")
  tfds_split, part = spec.splits[split]
  root = _tfds_data_dir(data_config.data_dir)
  if root and not data_config.download and not Path(root).is_dir():
    source = "config.data.data_dir" if data_config.data_dir else "$TFDS_DATA_DIR"
    raise DataError(f"the TFDS data dir {root} (from {source}) does not exist, and "
                    "config.data.download is False. Set TFDS_DATA_DIR (or config.data.data_dir) to a "
                    f"directory holding a prepared {name!r}, or set config.data.download=True to let "
                    "TFDS download it (needs internet).")
  images, labels = _decode_tfds_split(name, tfds_split, root, bool(data_config.download))
  if part != "all":  # validation = the last images of the training split
    cut = len(images) - min(spec.held_out, len(images) // 5)
    rows = slice(0, cut) if part == "head" else slice(cut, None)
    images, labels = images[rows], (None if labels is None else labels[rows])
  check_images(images, spec.image_shape, what=f"{name}/{split} images")
  if data_config.mode == "static" and not spec.is_binary:
    # One fixed binarization, the same for every run with this data seed.
    key = jax.random.fold_in(jax.random.key(data_config.binarize_seed), ["train", "validation", "test"].index(split))
    images = np.asarray(jax.random.bernoulli(key, images / 255.0)).astype(np.uint8)
  elif spec.is_binary and data_config.mode != "static":
    raise DataError(f"{name} is binary already: use config.data.mode='static', not {data_config.mode!r}")
  return Split(images=images, labels=labels)


def to_model_input(raw: jax.Array, key: jax.Array | None, mode: str) -> jax.Array:
  """uint8 batch -> float32 model input for ``mode`` (pure, jittable).

  ``key`` drives the dynamic binarization and the dequantization noise; the
  static mode needs none.
  """
  if mode == "static":
    return raw.astype(jnp.float32)
  x = raw.astype(jnp.float32)
  if mode == "dynamic":
    return jax.random.bernoulli(key, x / 255.0).astype(jnp.float32)
  if mode == "grey":
    return (x + jax.random.uniform(key, x.shape)) / 256.0
  raise ValueError(f"unknown data mode {mode!r}; choose one of {MODES}")


def take_rows(data: jax.Array, idx: jax.Array) -> jax.Array:
  """``data[idx]`` for integer indices ``idx`` into the leading axis of ``data`` [N, ...].

  Gathered from the flat [N, prod(...)] view and reshaped back: the same values,
  but XLA:CPU copies whole rows that way. An epoch of batches of 1,024 uint8
  MNIST images [N, 28, 28, 1] takes 5.5 ms instead of 42.6 ms by indexing the
  4-D array (``python -m benchmarks.data_ops``).
  """
  rows = jnp.reshape(data, (data.shape[0], -1))[idx]
  return jnp.reshape(rows, idx.shape + data.shape[1:])


# ``permutation`` packs the element index into the low bits of each 32-bit sort key;
# above this many elements too few random bits would be left, and it falls back.
PACKED_PERMUTATION_MAX = 2**24


def permutation(key: jax.Array, n: int) -> jax.Array:
  """A uniformly random permutation of ``range(n)`` (int32 [n]) from ``key``.

  The random-sort-key shuffle of ``jax.random.permutation``: each round sorts
  the elements by random keys, and rounds repeat until ties among the keys
  (which keep the current order) are unlikely, ceil(3 ln n / (bits ln 2))
  rounds for keys of ``bits`` random bits. Here each 32-bit key carries the
  element's position in its low ceil(log2 n) bits and random bits above, so a
  round is one sort of a single uint32 array, which XLA:CPU does several times
  faster than sorting (key, value) pairs: 6.9 ms instead of 23.8 ms for
  n = 60,000 on this project's CPU (3 rounds of 16 random bits instead of 2 of
  32; ``python -m benchmarks.data_ops``), against about 650 ms for an MLP VAE
  epoch at batch 1024. Above ``PACKED_PERMUTATION_MAX`` elements it is
  ``jax.random.permutation``.
  """
  if n > PACKED_PERMUTATION_MAX:
    return jax.random.permutation(key, n)
  index_bits = max(1, (n - 1).bit_length())
  random_bits = 32 - index_bits
  rounds = math.ceil(3 * math.log(max(n, 1)) / (random_bits * math.log(2)))
  position = jnp.arange(n, dtype=jnp.uint32)
  perm = jnp.arange(n, dtype=jnp.int32)
  for round_key in jax.random.split(key, rounds) if rounds else ():
    bits = jax.random.bits(round_key, (n,), jnp.uint32)
    order = jax.lax.sort((bits >> index_bits << index_bits) | position) & ((1 << index_bits) - 1)
    perm = perm[order.astype(jnp.int32)]
  return perm


def epoch_batch_indices(key: jax.Array, num_examples: int, batch_size: int) -> jax.Array:
  """A permutation of the examples (``permutation``) cut into [num_batches, batch_size]
  (last partial batch dropped)."""
  num_batches = num_examples // batch_size
  perm = permutation(key, num_examples)
  return perm[: num_batches * batch_size].reshape(num_batches, batch_size)


def bits_per_dim(nll_nats: float, num_dims: int, mode: str) -> float:
  """Negative log-likelihood per dimension in bits, for discrete data.

  For ``grey`` (dequantized x/256 on [0, 1)) the density on [0, 1)^D is moved to
  the integer grid by adding log 256 per dimension: a true bound on the discrete
  likelihood (Theis et al. 2016).
  """
  bpd = nll_nats / (num_dims * np.log(2.0))
  return float(bpd + (8.0 if mode == "grey" else 0.0))
