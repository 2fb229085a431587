"""``jit``: ``jax.jit`` with the XLA options this library measured to help.

XLA's CPU backend hands matmuls to YNNPACK and by default fuses the
elementwise work and reductions that follow a matmul into the same library
call. In a VAE that work is the likelihood of every pixel of every sample (an
exp and a log1p each); inside the YNNPACK call it ran about 7x slower than in
XLA's own fused loop (importance-sampled evaluation of Burda et al.'s MLP:
``python -m benchmarks.evaluation --compare_xla_defaults`` prints both).
``LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT`` keeps each matmul a library call of its
own. The option is a CPU one; other backends do not read it.

Edit ``COMPILER_OPTIONS`` (before the functions are built) to change or drop
the options, e.g. ``COMPILER_OPTIONS.clear()`` for XLA's defaults.
"""

from __future__ import annotations

from typing import Any, Callable

import jax

COMPILER_OPTIONS: dict[str, Any] = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
}


def jit(fun: Callable | None = None, **jit_kwargs) -> Callable:
  """``jax.jit(fun, **jit_kwargs)`` compiled with ``COMPILER_OPTIONS``; usable as a decorator."""
  if fun is None:
    return lambda f: jit(f, **jit_kwargs)
  options = dict(COMPILER_OPTIONS) or None
  return jax.jit(fun, compiler_options=options, **jit_kwargs)
