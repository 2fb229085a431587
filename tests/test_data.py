import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from vae_jax import data as data_lib
from tests.conftest import requires_binarized_mnist, requires_mnist


def data_config(name, mode="static", **kw):
  return ml_collections.ConfigDict(dict(name=name, mode=mode, data_dir="", download=False,
                                        binarize_seed=0, **kw))


@requires_binarized_mnist
def test_binarized_mnist_splits_are_the_published_static_binarization():
  sizes = {}
  for split in ("train", "validation", "test"):
    s = data_lib.load_split(data_config("binarized_mnist"), split)
    assert s.images.dtype == np.uint8 and s.images.shape[1:] == (28, 28, 1)
    assert set(np.unique(s.images)) <= {0, 1}
    sizes[split] = s.images.shape[0]
  assert sizes == {"train": 50000, "validation": 10000, "test": 10000}


@requires_mnist
def test_mnist_validation_is_the_last_10000_training_images():
  train = data_lib.load_split(data_config("mnist", "dynamic"), "train")
  val = data_lib.load_split(data_config("mnist", "dynamic"), "validation")
  assert train.images.shape[0] == 50000 and val.images.shape[0] == 10000
  assert val.labels.shape == (10000,) and train.images.max() > 1
  full, _ = data_lib._decode_tfds_split("mnist", "train", data_lib._tfds_data_dir(""), False)
  np.testing.assert_array_equal(val.images, full[-10000:])
  # Static mode on a grey dataset: one fixed binarization, the same every time.
  a = data_lib.load_split(data_config("mnist", "static"), "validation").images
  b = data_lib.load_split(data_config("mnist", "static"), "validation").images
  np.testing.assert_array_equal(a, b)
  assert set(np.unique(a)) == {0, 1}


@pytest.mark.parametrize("name,shape", [("fashion_mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_other_datasets_go_through_the_same_path(name, shape):
  with tfds.testing.mock_data(num_examples=24, policy=tfds.testing.MockPolicy.USE_CODE):
    data_lib._decode_tfds_split.cache_clear()
    for mode in ("dynamic", "grey"):
      for split in ("train", "test"):
        s = data_lib.load_split(data_config(name, mode), split)
        assert s.images.dtype == np.uint8 and s.images.shape[1:] == shape
        x = data_lib.to_model_input(jnp.asarray(s.images[:4]), jax.random.key(0), mode)
        assert x.dtype == jnp.float32 and x.shape == (4,) + shape
  data_lib._decode_tfds_split.cache_clear()


def test_model_input_modes():
  raw = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2000, 4, 4, 1)), jnp.uint8)
  key = jax.random.key(1)
  grey = data_lib.to_model_input(raw, key, "grey")
  assert float(grey.min()) >= 0 and float(grey.max()) < 1
  np.testing.assert_array_equal(np.floor(np.asarray(grey) * 256).astype(np.uint8), raw)
  binary = data_lib.to_model_input(raw, key, "dynamic")
  assert set(np.unique(binary)) <= {0.0, 1.0}
  # E[x_binary] = grey level / 255, checked over 2000 images (std err ~ 0.011 per pixel).
  np.testing.assert_allclose(binary.mean(0), (raw / 255.0).mean(0), atol=0.05)
  again = data_lib.to_model_input(raw, key, "dynamic")
  other = data_lib.to_model_input(raw, jax.random.key(2), "dynamic")
  np.testing.assert_array_equal(binary, again)
  assert not np.array_equal(binary, other)
  static = data_lib.to_model_input(jnp.asarray([[1, 0]], jnp.uint8), None, "static")
  np.testing.assert_array_equal(static, [[1.0, 0.0]])


def test_epoch_batches_are_a_seeded_permutation():
  idx = data_lib.epoch_batch_indices(jax.random.key(0), 103, 10)
  assert idx.shape == (10, 10)
  assert len(np.unique(idx)) == 100 and idx.max() < 103
  np.testing.assert_array_equal(idx, data_lib.epoch_batch_indices(jax.random.key(0), 103, 10))
  assert not np.array_equal(idx, data_lib.epoch_batch_indices(jax.random.key(1), 103, 10))


@pytest.mark.parametrize("n", [1, 2, 7, 256, 257, 60000])
def test_permutation_is_a_seeded_permutation(n):
  perm = np.asarray(jax.jit(data_lib.permutation, static_argnums=1)(jax.random.key(3), n))
  assert perm.dtype == np.int32
  np.testing.assert_array_equal(np.sort(perm), np.arange(n))
  np.testing.assert_array_equal(perm, data_lib.permutation(jax.random.key(3), n))
  if n > 2:
    assert not np.array_equal(perm, data_lib.permutation(jax.random.key(4), n))


def test_permutation_is_uniform():
  """All 24 orders of 4 elements are equally likely (chi-square), and with n = 300
  (2 rounds of 23 random bits) neighbours i, i + 1 keep their order half the time.

  Ties among the random keys keep the current order, so a shuffle with too few
  random bits per round, or too few rounds, leaves neighbours in order more than
  half the time and favours the identity among the 24 orders.
  """
  from scipy import stats
  keys = jax.random.split(jax.random.key(0), 24000)
  perms = np.asarray(jax.vmap(lambda k: data_lib.permutation(k, 4))(keys))
  _, counts = np.unique(perms @ (4 ** np.arange(4)), return_counts=True)
  assert len(counts) == 24 and stats.chisquare(counts).pvalue > 1e-3
  perms = np.asarray(jax.vmap(lambda k: data_lib.permutation(k, 300))(keys))
  position = np.argsort(perms, axis=1)
  kept = (position[:, :-1] < position[:, 1:]).mean(axis=1)  # per draw
  z = (kept.mean() - 0.5) / (kept.std() / np.sqrt(len(kept)))
  assert abs(z) < 4, z


def test_permutation_falls_back_above_the_packed_size(monkeypatch):
  monkeypatch.setattr(data_lib, "PACKED_PERMUTATION_MAX", 5)
  np.testing.assert_array_equal(data_lib.permutation(jax.random.key(1), 9),
                                jax.random.permutation(jax.random.key(1), 9))


def test_take_rows_is_indexing():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (50, 4, 3, 2), dtype=np.uint8)
  labels = rng.integers(0, 10, 50).astype(np.int32)
  idx = jnp.asarray(rng.integers(0, 50, (3, 7)))
  for data in (images, labels):
    got = jax.jit(data_lib.take_rows)(jnp.asarray(data), idx)
    assert got.shape == idx.shape + data.shape[1:] and got.dtype == data.dtype
    np.testing.assert_array_equal(got, data[np.asarray(idx)])


@pytest.mark.parametrize("images,match", [
    (np.zeros((5, 28, 28)), "shape"),
    (np.zeros((5, 32, 32, 1)), "shape"),
    (np.full((5, 28, 28, 1), np.nan), "non-finite"),
    (np.full((5, 28, 28, 1), -1.0), "values"),
    (np.zeros((0, 28, 28, 1)), "empty"),
])
def test_bad_images_are_named(images, match):
  with pytest.raises(data_lib.DataError, match=match):
    data_lib.check_images(images, (28, 28, 1))


def test_unknown_dataset_and_missing_data_dir_are_named(tmp_path):
  with pytest.raises(data_lib.DataError, match="imagenet"):
    data_lib.load_split(data_config("imagenet"), "train")
  with pytest.raises(data_lib.DataError, match="TFDS_DATA_DIR"):
    data_lib._decode_tfds_split.__wrapped__("mnist", "train", str(tmp_path / "nowhere"), False)


def test_bits_per_dim():
  assert data_lib.bits_per_dim(784 * np.log(2.0), 784, "static") == pytest.approx(1.0)
  assert data_lib.bits_per_dim(0.0, 10, "grey") == pytest.approx(8.0)


@requires_binarized_mnist
def test_the_cache_follows_the_source_files_and_a_damaged_source_is_named(tmp_path):
  """The decoded arrays are cached under a key of the source files (path, size, mtime): another copy
  of the data is read afresh, and a truncated record file gives a DataError naming it."""
  import os
  import shutil
  shared = os.environ["TFDS_DATA_DIR"]
  good = tmp_path / "good" / "binarized_mnist"
  shutil.copytree(f"{shared}/binarized_mnist", good)
  damaged = tmp_path / "damaged" / "binarized_mnist"
  shutil.copytree(good, damaged)
  record = next((damaged / "1.0.0").glob("binarized_mnist-validation.array_record*"))
  os.chmod(record, 0o644)
  with open(record, "r+b") as f:
    f.truncate(record.stat().st_size // 2)
  cfg = lambda root: ml_collections.ConfigDict(dict(name="binarized_mnist", data_dir=str(root),
                                                    download=False, mode="static", binarize_seed=0))
  images = data_lib.load_split(cfg(tmp_path / "good"), "validation").images  # decoded and cached
  assert images.shape == (10000, 28, 28, 1)
  with pytest.raises(data_lib.DataError, match=r"'validation' cannot be read.*binarized_mnist-validation"
                                               r"\.array_record.*damaged"):
    data_lib.load_split(cfg(tmp_path / "damaged"), "validation")  # same name and size, never the cache
