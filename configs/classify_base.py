"""Every field of a `train.classify` config, with defaults; recipes start from this one.

Durations and intervals are in epochs of the training split; batch sizes are global (over all
devices and processes).
"""

import ml_collections

from train.input_pipeline import default_config as default_data_config
from train.optim import default_optim_config


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.model = 'cnn'  # any name in zoo.list_models()
  config.model_kwargs = ml_collections.ConfigDict()  # fields of the model's dataclass
  config.dtype = 'float32'  # computation dtype; parameters stay float32
  config.data = default_data_config()  # fields: see train/input_pipeline.py
  config.data.shards = 8  # the same batches on 1, 2, 4 or 8 processes
  config.seed = 0
  config.batch_size = 128
  config.grad_accum_steps = 1  # micro-batches per step: the same update in less memory
  config.parallelism = 'jit'  # or 'pmap'
  config.eval_batch_size = 256
  config.num_epochs = 10.0
  config.optim = default_optim_config()
  config.label_smoothing = 0.0
  config.log_every_steps = 50
  config.eval_every_epochs = 1.0
  config.checkpoint_every_epochs = 1.0
  config.keep_checkpoints = 3
  # init_from: a train.classify workdir whose best checkpoint initializes every parameter that
  # matches (the head only if the number of classes is the same); freeze_backbone: train the head
  # alone. See docs/transfer.md.
  config.transfer = ml_collections.ConfigDict(dict(init_from='', freeze_backbone=False))
  config.early_stopping = ml_collections.ConfigDict(dict(
      metric='accuracy', mode='max', patience=0, min_delta=0.0))  # patience 0: never stop
  return config
