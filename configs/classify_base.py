"""Every field of a `train.classify` config, with defaults; recipes start from this one.

Durations and intervals are in epochs of the training split; batch sizes are global (over all
devices and processes).
"""

import ml_collections

from train.optim import default_optim_config


def data_config(dataset: str, image_size: tuple[int, ...] = ()) -> ml_collections.ConfigDict:
  """Input pipeline fields (see train/input_pipeline.py)."""
  return ml_collections.ConfigDict(dict(
      dataset=dataset,  # a TFDS name, or 'folder:/path/to/images' (one subfolder per class)
      data_dir='',  # TFDS data_dir; '' is TFDS's default
      train_split='train',
      eval_split='test',
      image_size=tuple(image_size),  # (height, width) to resize to; () keeps the dataset's
      shuffle_buffer=10_000,
      normalization='featurewise',  # 'none' | 'per_channel' | 'featurewise' | 'samplewise'
      mean=(),  # per channel on the [0, 1] scale, for 'per_channel'
      std=(),
      folder_test_fraction=0.2,  # image folders without train/ and test/ subfolders
      augment=dict(flip=False, crop_padding=0, rotation=0.0, shift=0.0, zoom=0.0, shear=0.0,
                   noise_std=0.0, custom=''),
  ))


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.model = 'cnn'  # any name in zoo.list_models()
  config.model_kwargs = ml_collections.ConfigDict()  # fields of the model's dataclass
  config.dtype = 'float32'  # computation dtype; parameters stay float32
  config.data = data_config('sklearn_digits')
  config.seed = 0
  config.batch_size = 128
  config.eval_batch_size = 256
  config.num_epochs = 10.0
  config.optim = default_optim_config()
  config.label_smoothing = 0.0
  config.log_every_steps = 50
  config.eval_every_epochs = 1.0
  config.checkpoint_every_epochs = 1.0
  config.keep_checkpoints = 3
  config.early_stopping = ml_collections.ConfigDict(dict(
      metric='accuracy', mode='max', patience=0, min_delta=0.0))  # patience 0: never stop
  return config
