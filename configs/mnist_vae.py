"""A VAE on dynamically binarized MNIST with a Bernoulli likelihood.

    python -m train.vae --config configs/mnist_vae.py --workdir runs/mnist_vae

Each training step binarizes every pixel afresh, x ~ Bernoulli(intensity); the test set is
binarized once with a fixed seed (`config.binarize = 'dynamic'`). The final evaluation
estimates the test log-likelihood with the importance-weighted bound at k = 1000.

Not measured here: MNIST cannot be downloaded on the machines this was written on. For
reference, Burda et al. (2016, "Importance Weighted Autoencoders", Table 1) report on binarized
MNIST, with k = 5000: -log p(x) = 86.76 nats for a VAE with one stochastic layer and 84.78 for
the same model trained as an IWAE (k = 50); with two stochastic layers, 85.33 and 82.90. This
recipe trains a one-layer convolutional VAE on the ELBO, so compare its `iwae_nll` with 86.76.
"""

from configs import common, vae_base


def get_config(variant: str = ''):
  """`:tiny`: a tiny VAE, 4 steps (for tests)."""
  tiny = common.parse_variant('configs/mnist_vae.py', variant, ('tiny',))
  config = vae_base.get_config()
  config.data.dataset = 'mnist'
  config.data.image_size = (28, 28)
  config.model_kwargs.update(dict(latent_dim=32, features=(32, 64), likelihood='bernoulli'))
  config.binarize = 'dynamic'
  config.batch_size = 128
  config.eval_batch_size = 200
  config.num_epochs = 200.0
  config.eval_every_epochs = 10.0
  config.checkpoint_every_epochs = 10.0
  config.log_every_steps = 200
  config.optim.learning_rate = 1e-3
  config.iwae_k = 1000
  config.iwae_chunk_size = 10  # 10 x 200 decoded 28x28 images at a time
  if tiny:
    vae_base.tiny(config)
  return config
