"""The VQ benchmark's FLOP counts, against hand computations.

(That its PyTorch references compute the library's function is checked by the
benchmark itself on every run: it prints both first-batch losses and the
largest difference of the PixelCNN logits. As tests they cost about 20
CPU-seconds of compilation, more than their place in the suite is worth.)
"""

from benchmarks import vq as vq_bench
from experiments.configs.vq import prior_mnist
from experiments.configs.vq import vqvae_mnist
from vae_jax import vq_config


def test_flop_counts_of_the_mnist_models():
  model = vq_config.make_vqvae(vqvae_mnist.get_config())
  # Encoder: 14*14*16*1*32 + 7*7*16*32*64 + 7*7*9*64*64 + 2*(7*7*9*64*32 + 7*7*32*64) + 7*7*64*16
  #        = 100,352 + 1,605,632 + 1,806,336 + 2,007,040 + 50,176 = 5,569,536;
  # distances 7*7*16*64 = 50,176;
  # decoder: 7*7*9*16*64 + 2,007,040 + 7*7*16*64*32 + 14*14*16*32*1 = 4,164,608.
  assert vq_bench.vqvae_forward_macs(model) == 5_569_536 + 50_176 + 4_164_608
  prior = vq_config.make_prior(prior_mnist.get_config(), model)
  # Per position: embed 64*32; 8 layers of 9*32*64 + 3*32*64 + 64*64 + 32*32; out 32*64 + 64*64.
  per_position = 64 * 32 + 8 * (18_432 + 6_144 + 4_096 + 1_024) + 2_048 + 4_096
  assert vq_bench.pixelcnn_forward_macs(prior) == 49 * per_position == 12_042_240
