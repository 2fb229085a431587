"""Figures (host side only): image grids and latent maps saved as PNG with matplotlib.

Latent maps (``vae_jax/commands/latent_maps.py``): posterior means scattered and
coloured by label, the decoded manifold of a 2-D latent (Kingma & Welling
2014, Fig. 4), a PCA projection of higher-dimensional posterior means, and
interpolation strips.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, ax, path: Path, title: str | None, *, dpi: int) -> Path:
  """Titles ``ax``, writes ``fig`` to ``path`` as PNG and closes it."""
  if title:
    ax.set_title(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=dpi)
  plt.close(fig)
  return path


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
  return _save(fig, ax, path, title, dpi=120)


def interleave_rows(originals: np.ndarray, reconstructions: np.ndarray,
                    ncols: int = 16) -> tuple[np.ndarray, int]:
  """(images, ncols) of a grid whose rows alternate: ``ncols`` originals, then their
  reconstructions below them (whole rows only, when there are enough images)."""
  n = min(len(originals), len(reconstructions)) // ncols * ncols or len(originals)
  ncols = min(ncols, n)
  rows = []
  for start in range(0, n, ncols):
    rows += [originals[start:start + ncols], reconstructions[start:start + ncols]]
  return np.concatenate(rows), ncols


def save_reconstructions(originals: np.ndarray, reconstructions: np.ndarray,
                         path: str | Path, ncols: int = 16) -> Path:
  """Rows alternate: originals, then their reconstructions below them."""
  images, ncols = interleave_rows(originals, reconstructions, ncols)
  return save_grid(images, path, ncols=ncols, title="originals (odd rows) and reconstructions (even rows)")


# -- latent maps -----------------------------------------------------------------------------------

def manifold_latents(n: int, lo: float = 0.05, hi: float = 0.95) -> np.ndarray:
  """[n, n, 2] latent points of the decoded manifold: the inverse Gaussian CDF of an even grid.

  u_0 < ... < u_{n-1} are n evenly spaced points on [lo, hi]; entry [i, j] is
  (Phi^-1(u_j), Phi^-1(u_{n-1-i})): z_1 grows along a row (left to right) and
  z_2 up the columns, as on a plot. Under the prior N(0, I) every cell holds
  the same probability mass (Kingma & Welling 2014, Fig. 4).
  """
  if not (isinstance(n, (int, np.integer)) and n >= 1):
    raise ValueError(f"n={n!r} must be a positive integer")
  if not 0.0 < lo < hi < 1.0:
    raise ValueError(f"[lo, hi] = [{lo}, {hi}] must lie inside (0, 1) with lo < hi")
  from scipy.special import ndtri  # Phi^-1
  z = ndtri(np.linspace(lo, hi, n))
  z1, z2 = np.meshgrid(z, z[::-1])
  return np.stack([z1, z2], axis=-1).astype(np.float32)


def pca_2d(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Projection of points [N, D] onto their first two principal components.

  Returns (projected [N, 2], explained-variance ratio of the two components [2]);
  component signs are fixed so that each one's largest loading is positive.
  """
  x = np.asarray(points, np.float64)
  if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 2:
    raise ValueError(f"points have shape {x.shape}; expected [N >= 2, D >= 2]")
  x = x - x.mean(axis=0)
  _, s, vt = np.linalg.svd(x, full_matrices=False)
  vt = vt[:2] * np.sign(vt[:2][np.arange(2), np.argmax(np.abs(vt[:2]), axis=1)])[:, None]
  return x @ vt.T, (s[:2] ** 2) / np.sum(s ** 2)


def save_scatter(points: np.ndarray, labels: np.ndarray | None, path: str | Path, *,
                 title: str = "", xlabel: str = "z_1", ylabel: str = "z_2") -> Path:
  """2-D points [N, 2] as a scatter, coloured by integer label (10-colour map) with a legend."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  points = np.asarray(points)
  fig, ax = plt.subplots(figsize=(6.4, 5.6))
  if labels is None:
    ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.5, linewidths=0)
  else:
    labels = np.asarray(labels)
    cmap = plt.get_cmap("tab10")
    for c in np.unique(labels):
      sel = labels == c
      ax.scatter(points[sel, 0], points[sel, 1], s=2, alpha=0.6, linewidths=0,
                 color=cmap(int(c) % 10), label=str(c))
    ax.legend(markerscale=6, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  return _save(fig, ax, path, title, dpi=110)


def interpolate(z_a: np.ndarray, z_b: np.ndarray, steps: int) -> np.ndarray:
  """``steps`` points on the segment from z_a to z_b (both ends included): [steps, D]."""
  t = np.linspace(0.0, 1.0, steps)[:, None]
  return ((1.0 - t) * np.asarray(z_a)[None] + t * np.asarray(z_b)[None]).astype(np.float32)


def save_curves(curves: dict, path: str | Path, *, xlabel: str = "epoch", ylabel: str = "",
                title: str = "", reference: tuple[float, str] | None = None, log_y: bool = False) -> Path:
  """Line plot of named curves {name: (x [N], y [N])}, optionally a dashed horizontal reference
  line (value, label)."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig, ax = plt.subplots(figsize=(6.4, 4.2))
  for name, (x, y) in curves.items():
    ax.plot(np.asarray(x), np.asarray(y), linewidth=1.2, label=str(name))
  if reference is not None:
    ax.axhline(reference[0], color="k", linestyle="--", linewidth=1.0, label=reference[1])
  if log_y:
    ax.set_yscale("log")
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize=8, frameon=False)
  return _save(fig, ax, path, title, dpi=110)


def save_panels(panels: dict, path: str | Path, *, xlabel: str = "epoch", ylabels: dict | None = None,
                title: str = "", reference: tuple[float, str] | None = None,
                log_y: bool = False) -> Path:
  """One panel per metric, stacked: {metric: {curve name: (x [N], y [N])}}; the reference line
  (value, label) is drawn in the first panel."""
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig, axes = plt.subplots(len(panels), 1, figsize=(6.4, 1.0 + 3.2 * len(panels)), squeeze=False)
  for i, (ax, (metric, curves)) in enumerate(zip(axes[:, 0], panels.items())):
    for name, (x, y) in curves.items():
      ax.plot(np.asarray(x), np.asarray(y), linewidth=1.2, label=str(name))
    if reference is not None and i == 0:
      ax.axhline(reference[0], color="k", linestyle="--", linewidth=1.0, label=reference[1])
    if log_y:
      ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel((ylabels or {}).get(metric, metric))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
  return _save(fig, axes[0, 0], path, title, dpi=110)
