"""The experiment configs, one file per experiment (each ``get_config()`` returns a ConfigDict).

Commands take ``--config`` as a path or as the name of a file here:
``--config burda_iwae`` is ``vae_jax/configs/burda_iwae.py``, ``--config vq/prior_mnist`` is
``vae_jax/configs/vq/prior_mnist.py``, from any directory.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent


def path(name: str) -> str:
  """The file of the packaged config ``name`` ("default", "vq/vqvae_mnist", ...)."""
  return str(ROOT / f"{name.removesuffix('.py')}.py")


def names() -> list[str]:
  """Every packaged config, as ``--config`` accepts it."""
  return sorted(str(p.relative_to(ROOT).with_suffix("")) for p in ROOT.rglob("*.py")
                if p.name != "__init__.py")


def resolve(value: str) -> str:
  """``value`` if it is a file (a ``path:arg`` suffix kept), else the packaged config of that name."""
  file, sep, arg = value.partition(":")
  if Path(file).exists():
    return value
  packaged = ROOT / f"{file.removesuffix('.py')}.py"
  if packaged.exists() and not Path(file).is_absolute():
    return str(packaged) + sep + arg
  return value
