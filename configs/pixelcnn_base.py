"""Every field of a `train.pixelcnn` config, with defaults; the PixelCNN recipes start from this.

Durations and intervals are in epochs of the training split; batch sizes are global (over all
devices and processes).
"""

import ml_collections

from configs import common


def tiny(config: ml_collections.ConfigDict, **model_kwargs) -> ml_collections.ConfigDict:
  """A recipe's `:tiny` variant: the tiny gated PixelCNN (or `model_kwargs` on the recipe's
  model), 4 steps, 8 samples and 4 completions."""
  common.tiny(config)
  if model_kwargs:
    config.model_kwargs = model_kwargs
  else:
    config.model, config.model_kwargs = 'pixelcnn_gated_tiny', {}
  config.num_samples, config.num_completions = 8, 4
  return config


def get_config() -> ml_collections.ConfigDict:
  config = common.run_fields(ml_collections.ConfigDict(), early_stopping_metric='nll',
                             early_stopping_mode='min')
  config.batch_size = 64
  config.model = 'pixelcnn_gated'  # any name in zoo.list_models('pixelcnn*')
  config.model_kwargs = ml_collections.ConfigDict()  # fields of zoo.pixelcnn.PixelCNN
  config.data = common.data()
  config.data.normalization = 'none'  # required: images are quantized from [0, 1]
  config.num_levels = 2  # values per channel: 2 binarizes, 256 keeps 8 bits
  config.binarize_threshold = 0.5  # with num_levels=2: a pixel is 1 where its intensity is above
  config.optim = common.optim(learning_rate=1e-3, weight_decay=0.0)
  config.num_samples = 64  # images drawn at each evaluation (a multiple of the device count)
  config.num_completions = 16  # test images whose bottom half is sampled given the top half
  config.sample_temperature = 1.0  # logits are divided by it; 1 samples the model itself
  return config
