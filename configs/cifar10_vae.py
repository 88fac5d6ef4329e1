"""A VAE on CIFAR-10 with a discretized logistic likelihood over the 256 levels, in bits/dim.

    python -m train.vae --config configs/cifar10_vae.py --workdir runs/cifar10_vae

The 8-bit images are modelled as they are (no dequantization noise): the discretized logistic
is a distribution over the 256 levels, so `bits_per_dim` (negative ELBO) and
`iwae_bits_per_dim` (k = 1000) are bounds on the data's own bits per subpixel; 8 is what a
uniform model pays.

Not measured here: CIFAR-10 cannot be downloaded on the machines this was written on. For
scale, Kingma et al. (2016, "Improved Variational Inference with Inverse Autoregressive Flow")
report 3.11 bits/dim for a deep ResNet VAE with IAF posteriors; a single Gaussian latent layer
with a factorized decoder, as here, stays well above that.
"""

from configs import common, vae_base


def get_config(variant: str = ''):
  """`:tiny`: a tiny VAE, 4 steps (for tests)."""
  tiny = common.parse_variant('configs/cifar10_vae.py', variant, ('tiny',))
  config = vae_base.get_config()
  config.data.dataset = 'cifar10'
  config.data.image_size = (32, 32)
  config.model_kwargs.update(dict(latent_dim=128, features=(64, 128, 256), likelihood='logistic',
                                  num_bins=256))
  config.binarize = 'none'
  config.batch_size = 128
  config.eval_batch_size = 200
  config.num_epochs = 200.0
  config.eval_every_epochs = 10.0
  config.checkpoint_every_epochs = 10.0
  config.log_every_steps = 200
  config.optim.learning_rate = 1e-3
  config.iwae_k = 1000
  config.iwae_chunk_size = 10
  if tiny:
    vae_base.tiny(config)
  return config
