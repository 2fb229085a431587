"""``jit``: ``jax.jit`` with the XLA options this library measured to help.

XLA's CPU backend hands matmuls to YNNPACK and by default fuses the
elementwise work and reductions around a matmul into the same library call.
``LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT`` (``INDIVIDUAL_DOT`` below) instead keeps
each matmul a library call of its own. Which is faster depends on the step;
measured on this project's 2-core CPU (jax 0.10.2), examples/s unless noted:

============================================  ============  ==============
step                                          XLA defaults  INDIVIDUAL_DOT
============================================  ============  ==============
MLP VAE 784-400-20, batch 128                 61,300-63,200 52,100-53,300
MLP VAE, batch 1024                           79,900-83,300 49,200-76,500
IWAE k = 50, Burda's net, batch 100           2,640-2,690   2,550-2,670
conv VAE, batch 128 (patches + matmul)        1,769-1,951   1,785
VQ-VAE step, batch 100                        1,163         1,130
VampPrior (K = 500) VAE, batch 100            2,420         6,380
K = 5000 evaluation, 10,000 test images       104 s         147 s
============================================  ============  ==============

(``benchmarks/throughput.py`` with and without ``--individual_dot``: the MLP
and IWAE rows are two runs of each, interleaved, of ``--models mlp,iwae
--widths '' --skip_torch --iwae_examples 4000``, 2026-11-22; the conv row is
docs/speed.md's two runs and one ``--models conv --individual_dot`` run, with
the conv forms of ``vae_jax/layers.py`` of that day; ``benchmarks/vq.py``;
``benchmarks/evaluation.py --compare_options``; the VampPrior row is
``vae_jax/configs/vampprior.py``'s second epoch.) So the library compiles
with XLA's defaults, except the training step of a model with a mixture prior
(``options_for``): there the fused call that evaluates the K x D component
densities for every sample ran 2.6x slower.
Two earlier findings shaped this: the Bernoulli likelihood sums over the
flattened pixels (``distributions.bernoulli_log_prob``), without which the
fused call ran about 15x slower, and evaluation bounds the samples per compiled
step (``evaluate.MAX_SAMPLES_PER_STEP``), without which it ran 1.7x slower.
The options are CPU ones; other backends do not read them.

Edit ``COMPILER_OPTIONS`` (before the functions are built) to change the
options of every function, e.g. ``COMPILER_OPTIONS.update(INDIVIDUAL_DOT)``.
"""

from __future__ import annotations

from typing import Any, Callable

import jax

COMPILER_OPTIONS: dict[str, Any] = {}  # XLA's defaults

INDIVIDUAL_DOT: dict[str, Any] = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
}


def options_for(model) -> dict[str, Any]:
  """Compiler options for ``model``'s training step (see the table above)."""
  if getattr(model, "prior", "standard") in ("mog", "vamp"):
    return {**INDIVIDUAL_DOT, **COMPILER_OPTIONS}
  return dict(COMPILER_OPTIONS)


def jit(fun: Callable | None = None, *, options: dict[str, Any] | None = None,
        **jit_kwargs) -> Callable:
  """``jax.jit(fun, **jit_kwargs)`` compiled with ``options`` (default ``COMPILER_OPTIONS``).

  Usable as a decorator.
  """
  if fun is None:
    return lambda f: jit(f, options=options, **jit_kwargs)
  chosen = dict(COMPILER_OPTIONS if options is None else options) or None
  return jax.jit(fun, compiler_options=chosen, **jit_kwargs)
