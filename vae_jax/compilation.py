"""``jit``: ``jax.jit`` with the XLA options this library measured to help.

XLA's CPU backend hands matmuls to YNNPACK and by default fuses the
elementwise work and reductions that follow a matmul into the same library
call. In a VAE that work is the likelihood of every pixel of every sample (an
exp and a log1p each); inside the YNNPACK call it ran about 7x slower than in
XLA's own fused loop (importance-sampled evaluation of Burda et al.'s MLP:
``python -m benchmarks.evaluation --compare_xla_defaults`` prints both).
``LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT`` keeps each matmul a library call of its
own. The option is a CPU one; other backends do not read it.

Importance-sampled evaluation is the exception (``jit(..., xla_defaults=True)``):
with a few thousand samples per compiled step, XLA's default fusion of the
whole decoder and likelihood into one library call is the faster one there
(Burda's MLP, K = 5000 on 1,000 test images, 20 images x 250 samples per step,
2-core CPU: 11.1 s with the defaults, 14.6 s with the option). With 25,000
samples per step the same fused call ran 1.7x slower than with the option, so
``evaluate`` bounds the samples per step (``evaluate.MAX_SAMPLES_PER_STEP``).

Edit ``COMPILER_OPTIONS`` (before the functions are built) to change or drop
the options, e.g. ``COMPILER_OPTIONS.clear()`` for XLA's defaults everywhere.
"""

from __future__ import annotations

from typing import Any, Callable

import jax

COMPILER_OPTIONS: dict[str, Any] = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
}


def jit(fun: Callable | None = None, *, xla_defaults: bool = False, **jit_kwargs) -> Callable:
  """``jax.jit(fun, **jit_kwargs)`` compiled with ``COMPILER_OPTIONS``; usable as a decorator.

  ``xla_defaults=True`` compiles with XLA's own options instead (see above).
  """
  if fun is None:
    return lambda f: jit(f, xla_defaults=xla_defaults, **jit_kwargs)
  options = None if xla_defaults else (dict(COMPILER_OPTIONS) or None)
  return jax.jit(fun, compiler_options=options, **jit_kwargs)
