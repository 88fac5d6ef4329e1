"""A VAE on scikit-learn's 8x8 handwritten digits, fully offline; `:anomaly` trains on 0-8 only.

    python -m train.vae --config configs/digits_vae.py --workdir runs/digits_vae
    python -m train.vae --config configs/digits_vae.py:anomaly --workdir runs/digits_vae_0to8
    python -m train.anomaly --config configs/digits_vae.py:anomaly --workdir runs/digits_vae_0to8

The digits have 17 grey levels (ink counts 0..16 per 4x4 block). The images stay 8x8 and are
neither binarized nor dequantized: the likelihood is the discretized logistic over exactly those
17 levels (num_bins=17, pixels snapped to k/16), a proper distribution over the data as it is,
so the nats and bits per dimension are log-likelihoods of the real digits (bits/dim at most
log2(17) = 4.09 for a uniform model).

Measured on a 2-core CPU: see docs/vae.md.
"""

from configs import vae_base


def get_config(variant: str = ''):
  config = vae_base.get_config()
  config.data.dataset = 'sklearn_digits'
  config.data.image_size = (8, 8)
  config.model_kwargs.update(dict(latent_dim=8, features=(32, 64), likelihood='logistic',
                                  num_bins=17))
  config.binarize = 'none'
  config.batch_size = 64
  config.eval_batch_size = 120
  config.num_epochs = 100.0
  config.eval_every_epochs = 20.0
  config.checkpoint_every_epochs = 20.0
  config.log_every_steps = 200
  config.optim.learning_rate = 2e-3
  config.iwae_k = 1000
  if variant == 'anomaly':
    config.data.classes = tuple(range(9))
    config.anomaly.anomalous_classes = (9,)
  elif variant:
    raise ValueError(f"configs/digits_vae.py takes '' or ':anomaly', got {variant!r}")
  return config
