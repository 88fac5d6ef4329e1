"""Every field of a `train.vae` config, with defaults; the VAE recipes start from this one.

The fields every task shares (durations, batch sizes, parallelism, ...) are in configs/common.py.
"""

import ml_collections

from configs import common


def tiny(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A recipe's `:tiny` variant: a 3-dimensional latent, 4 and 8 channels, 4 steps, k = 20."""
  common.tiny(config)
  config.model_kwargs.update(dict(latent_dim=3, features=(4, 8)))
  config.iwae_k, config.iwae_chunk_size, config.anomaly.num_samples = 20, 10, 4
  return config


def get_config() -> ml_collections.ConfigDict:
  config = common.run_fields(ml_collections.ConfigDict(), early_stopping_metric='neg_elbo',
                             early_stopping_mode='min')
  # Fields of zoo.vae.VAE (image_shape comes from the data).
  config.model_kwargs = ml_collections.ConfigDict(dict(
      latent_dim=16, features=(32, 64), likelihood='bernoulli', num_bins=256,
      decoder='transpose'))
  config.data = common.data()
  config.data.normalization = 'none'  # the likelihoods need images in [0, 1]
  # How images become what the likelihood scores. 'bernoulli' needs binary pixels: 'dynamic'
  # draws each pixel ~ Bernoulli(intensity) afresh every step (the eval split the same way at
  # every evaluation: seeded by the batch index, for a given eval_batch_size), 'threshold' keeps
  # intensity > 0.5. 'logistic' takes 'none': pixels are snapped to the nearest of its num_bins
  # levels k / (num_bins - 1).
  config.binarize = 'none'
  config.beta = 1.0  # weight of the KL term in the training loss (1: the negative ELBO)
  config.optim = common.optim(name='adam', weight_decay=0.0)
  config.keep_checkpoints = 2
  # Importance samples for the log-likelihood estimate of the final evaluation (0: none), and
  # how many of them are decoded at once (memory: iwae_chunk_size eval batches).
  config.iwae_k = 1000
  config.iwae_chunk_size = 50
  # `python -m train.anomaly`: the per-image score ('neg_elbo' or 'reconstruction_error'),
  # posterior samples averaged for 'neg_elbo', the split scored (all classes, whatever
  # data.classes says), and the labels that count as anomalies for the AUROC (() for none).
  config.anomaly = ml_collections.ConfigDict(dict(
      score='neg_elbo', num_samples=16, split='test', anomalous_classes=()))
  return config
