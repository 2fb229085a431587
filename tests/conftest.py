import os
from pathlib import Path

import pytest

SHARED_TFDS = Path(__file__).resolve().parents[1].parent / "shared" / "tensorflow_datasets"
if "TFDS_DATA_DIR" not in os.environ and SHARED_TFDS.exists():
  os.environ["TFDS_DATA_DIR"] = str(SHARED_TFDS)


def has_tfds(name: str) -> bool:
  root = os.environ.get("TFDS_DATA_DIR")
  return bool(root) and (Path(root) / name).exists()


requires_binarized_mnist = pytest.mark.skipif(
    not has_tfds("binarized_mnist"), reason="binarized_mnist not prepared (set TFDS_DATA_DIR)")
requires_mnist = pytest.mark.skipif(
    not has_tfds("mnist"), reason="mnist not prepared (set TFDS_DATA_DIR)")


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path_factory, monkeypatch):
  # Decoded-split cache shared across the session, never the user's.
  monkeypatch.setenv("VAE_JAX_CACHE", str(tmp_path_factory.getbasetemp() / "vae_jax_cache"))
