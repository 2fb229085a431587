"""The digit classifier: label checks, label matching, learning a separable toy problem."""

import jax
import numpy as np
import pytest

from vae_jax.apps import classifier as clf
from vae_jax import data as data_lib

pytestmark = pytest.mark.usefixtures("fast_compiling_rng")


@pytest.mark.parametrize("labels, match", [
    (np.array([0, 1, 10]), r"lie in \[0, 10\]; expected class indices in \[0, 3\).*1 of them out of range \(e.g. \[10\]\)"),
    (np.array([0, -1, 2]), r"lie in \[-1, 2\]"),
    (np.array([0, 1]), r"shape \(2,\); expected \(3,\)"),
    (np.array([0.0, 1.5, 2.0]), "dtype float64 with non-integer values"),
    (np.array([0.0, np.nan, 2.0]), "non-integer"),
    (None, "missing"),
])
def test_bad_labels_are_named(labels, match):
  images = np.zeros((3, 4, 4, 1), np.float32)
  model = clf.Classifier(hidden_sizes=(4,), num_classes=3)
  with pytest.raises(data_lib.DataError, match=match):
    clf.train_classifier(model, images, labels, jax.random.key(0), num_epochs=1, batch_size=3)


def test_match_labels_finds_the_grey_image_each_binary_draw_came_from():
  rng = np.random.default_rng(0)
  grey = rng.integers(0, 256, (40, 6, 6, 1)).astype(np.uint8)
  grey_labels = rng.integers(0, 10, 40)
  order = rng.permutation(40)[:25]
  binary = (rng.random((25, 6, 6, 1)) < grey[order] / 255.0).astype(np.uint8)
  labels, index, margin = clf.match_labels(binary, grey, grey_labels, chunk=7)
  np.testing.assert_array_equal(index, order)
  np.testing.assert_array_equal(labels, grey_labels[order])
  assert labels.dtype == np.int32 and np.all(margin > 0)
  with pytest.raises(clf.LabelError, match="do not match"):
    clf.match_labels(binary, grey, grey_labels[:5])


def test_classifier_learns_which_half_holds_the_ink():
  rng = np.random.default_rng(1)
  labels = rng.integers(0, 2, 256).astype(np.int32)
  images = (rng.random((256, 4, 4, 1)) < 0.15).astype(np.float32)
  rows = np.arange(4)[None, :, None, None]
  ink = (rows < 2) == (labels[:, None, None, None] == 0)
  images = np.maximum(images, ink * (rng.random(images.shape) < 0.8))
  model = clf.Classifier(hidden_sizes=(16,), num_classes=2)
  params, losses = clf.train_classifier(model, images[:192], labels[:192], jax.random.key(0), num_epochs=10,
                                        batch_size=32, learning_rate=1e-2)
  assert losses[-1] < 0.5 * losses[0]
  assert clf.accuracy(model, params, images[192:], labels[192:]) > 0.95
  with pytest.raises(data_lib.DataError, match="out of range"):
    clf.train_classifier(model, images, np.full(256, 2), jax.random.key(0))
  np.testing.assert_array_equal(data_lib.check_labels(np.array([2.0, 0.0]), 3), [2, 0])  # integral floats pass
