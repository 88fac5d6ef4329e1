"""Every field of a `train.gan` config, with defaults (DCGAN, Radford et al. 2015); recipes
start from this one.

The fields every task shares (durations, batch sizes, parallelism, ...) are in configs/common.py.
"""

import ml_collections

from configs import common


def _network(model: str, **kwargs) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      model=model,  # a name in zoo.list_models()
      kwargs=kwargs,  # fields of the model's dataclass; image_size/channels come from the data
      # The paper's Adam: learning rate 2e-4, beta1 0.5.
      optim=common.optim(name='adam', learning_rate=2e-4, b1=0.5, weight_decay=0.0,
                                 schedule='constant')))


def tiny(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A recipe's `:tiny` variant: networks of width 4, 4 steps, 72 samples scored."""
  common.tiny(config)
  config.generator.kwargs.update(dict(width=4, latent_dim=8))
  config.discriminator.kwargs.width = 4
  config.eval.update(dict(num_samples=72, batch_size=32, num_splits=4, num_grid=16))
  return config


def get_config() -> ml_collections.ConfigDict:
  config = common.run_fields(ml_collections.ConfigDict(), early_stopping_metric='fid',
                             early_stopping_mode='min')
  config.generator = _network('dcgan_generator', width=64, latent_dim=100, decoder='transpose')
  config.discriminator = _network('dcgan_discriminator', width=64)
  config.loss = 'non_saturating'  # or 'hinge', 'minimax' (see train.gan.generator_loss)
  config.data = common.data()
  config.data.normalization = 'none'  # the GAN maps [0, 1] to [-1, 1] itself
  config.eval_batch_size = 256  # held-out images the discriminator is evaluated on
  config.num_epochs = 25.0
  config.eval_every_epochs = 5.0
  config.checkpoint_every_epochs = 5.0
  config.keep_checkpoints = 2
  config.eval = ml_collections.ConfigDict(dict(
      feature_net='classifier',  # or 'inception' (see train/metrics/feature_nets.py)
      # 'classifier': a train.classify run on the same dataset, and how it was trained.
      classifier_config='configs/digits_cnn.py',
      classifier_overrides=(),  # 'field=value' strings, as --config.field=value flags
      classifier_workdir='runs/digits_cnn',
      # 'inception': pytorch-fid's FID weights as .npz (see docs/gan.md).
      inception_weights='',
      num_samples=10_000,  # generated images per evaluation
      batch_size=250,
      num_splits=10,  # Inception Score splits
      min_class_share=0.2,  # a class is covered with >= this share of an equal split
      num_grid=64,  # images in the sample grid
      grid_size=(),  # (height, width) to show grid images at (bilinear); () as generated
      grid_scale=1,  # pixel enlargement in the grid PNG
      checkpoint='best',  # for train.gan_eval: 'best' (by FID), 'latest', or a step
  ))
  config.monitor = ml_collections.ConfigDict(dict(
      min_feature_spread=0.5,
      vanishing_grad_ratio=0.01,
      max_loss_oscillation=0.5,
      window=10,  # logged training means the oscillation is measured over
  ))
  return config
