"""Figures (host side only): image grids saved as PNG with matplotlib."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def tile(images: np.ndarray, ncols: int | None = None, pad: int = 1) -> np.ndarray:
  """[N, H, W, C] in [0, 1] -> one [rows*(H+pad), cols*(W+pad), C] mosaic."""
  images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
  n, h, w, c = images.shape
  ncols = ncols or int(math.ceil(math.sqrt(n)))
  nrows = int(math.ceil(n / ncols))
  out = np.ones((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), np.float32)
  for i, img in enumerate(images):
    r, col = divmod(i, ncols)
    out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = img
  return out


def save_grid(images: np.ndarray, path: str | Path, *, ncols: int | None = None,
              title: str | None = None) -> Path:
  """Saves a grid of images [N, H, W, C] (values in [0, 1]) as a PNG; returns the path."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  mosaic = tile(images, ncols)
  fig, ax = plt.subplots(figsize=(6, 6 * mosaic.shape[0] / mosaic.shape[1] + (0.4 if title else 0)))
  ax.imshow(mosaic[..., 0] if mosaic.shape[-1] == 1 else mosaic, cmap="gray", vmin=0, vmax=1,
            interpolation="nearest")
  ax.axis("off")
  if title:
    ax.set_title(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
  return path


def save_reconstructions(originals: np.ndarray, reconstructions: np.ndarray,
                         path: str | Path, ncols: int = 16) -> Path:
  """Rows alternate: originals, then their reconstructions below them."""
  n = min(len(originals), len(reconstructions)) // ncols * ncols or len(originals)
  ncols = min(ncols, n)
  rows = []
  for start in range(0, n, ncols):
    rows += [originals[start:start + ncols], reconstructions[start:start + ncols]]
  return save_grid(np.concatenate(rows), path, ncols=ncols,
                   title="originals (odd rows) and reconstructions (even rows)")
