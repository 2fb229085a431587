"""VAE with the VampPrior, 1 stochastic layer (Tomczak & Welling 2018, static MNIST).

    vae-jax train --config vae_jax/configs/vampprior.py --workdir runs/vampprior
    vae-jax evaluate --workdir runs/vampprior --num_importance_samples 5000

The paper's setup, from its text and the authors' code (jmtomczak/vae_vampprior):
x -> 2 x 300 gated dense (h = W x * sigmoid(V x)) -> z (40) -> 2 x 300 gated ->
Bernoulli logits; p(z) = (1/K) sum_k q(z | u_k) with K = 500 pseudo-inputs u_k
(initialized N(0.05, 0.01^2), clipped to [0, 1] in use); Monte Carlo KL (one
sample); Adam at 5e-4, batch 100, KL warm-up over the first 100 epochs.
Published test NLL (K = 5000): 85.57 nats (pythae's reproduction 85.79); the same
network with the standard prior: about 88.6
(``--config.model.prior=standard --config.loss.analytic_kl=True``).

Differences from the paper: the authors stop early (50 epochs without a better
validation bound, at most 2000 epochs) and normalize each parameter's gradient
before Adam (their AdamNormGrad); here the run has a fixed 1000 epochs with plain
Adam, and the logvar head is not clipped to [-6, 2]. Data init of the pseudo-inputs:
``--config.model.pseudo_inputs_init=data``. Measured figures (a short CPU run so
far) are in docs/priors_and_autoencoders.md.
"""

from vae_jax.configs import default


def get_config():
  config = default.get_config()
  config.model.latent_dims = (40,)
  config.model.hidden_sizes = ((300, 300),)
  config.model.activation = "gated"
  config.model.prior = "vamp"
  config.model.num_components = 500
  config.model.pseudo_inputs_init = "noise"
  config.loss.name = "elbo"
  config.loss.analytic_kl = False       # no closed-form KL against a mixture
  config.loss.num_samples = 1
  config.loss.warmup_epochs = 100.0
  config.optimizer.learning_rate = 5e-4
  config.batch_size = 100
  config.num_epochs = 1000
  config.eval_every_epochs = 10
  config.checkpoint_every_epochs = 10
  return config
