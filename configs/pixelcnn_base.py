"""Every field of a `train.pixelcnn` config, with defaults; the PixelCNN recipes start from this.

Durations and intervals are in epochs of the training split; batch sizes are global (over all
devices and processes).
"""

import ml_collections

from train.input_pipeline import default_config as default_data_config
from train.optim import default_optim_config


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.model = 'pixelcnn_gated'  # any name in zoo.list_models('pixelcnn*')
  config.model_kwargs = ml_collections.ConfigDict()  # fields of zoo.pixelcnn.PixelCNN
  config.dtype = 'float32'  # computation dtype; parameters stay float32
  config.data = default_data_config()  # fields: see train/input_pipeline.py
  config.data.normalization = 'none'  # required: images are quantized from [0, 1]
  config.num_levels = 2  # values per channel: 2 binarizes, 256 keeps 8 bits
  config.binarize_threshold = 0.5  # with num_levels=2: a pixel is 1 where its intensity is above
  config.seed = 0
  config.batch_size = 64
  config.eval_batch_size = 256
  config.num_epochs = 10.0
  config.optim = default_optim_config(learning_rate=1e-3, weight_decay=0.0)
  config.log_every_steps = 50
  config.eval_every_epochs = 1.0
  config.checkpoint_every_epochs = 1.0
  config.keep_checkpoints = 3
  config.early_stopping = ml_collections.ConfigDict(dict(
      metric='nll', mode='min', patience=0, min_delta=0.0))  # patience 0: never stop
  config.num_samples = 64  # images drawn at each evaluation (a multiple of the device count)
  config.num_completions = 16  # test images whose bottom half is sampled given the top half
  config.sample_temperature = 1.0  # logits are divided by it; 1 samples the model itself
  return config
