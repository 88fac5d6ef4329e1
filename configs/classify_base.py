"""Every field of a `train.classify` config, with defaults; recipes start from this one.

The fields every task shares (durations, batch sizes, parallelism, ...) are in configs/common.py.
"""

import ml_collections

from configs import common


def get_config() -> ml_collections.ConfigDict:
  config = common.run_fields(ml_collections.ConfigDict(), early_stopping_metric='accuracy',
                             early_stopping_mode='max')
  config.model = 'cnn'  # any name in zoo.list_models()
  config.model_kwargs = ml_collections.ConfigDict()  # fields of the model's dataclass
  # Recompute each block's activations in the backward pass instead of storing them: less memory
  # for deep models (resnet*, vit_*, convnext_*), about one more forward pass of compute.
  config.remat = False
  config.data = common.data()
  config.optim = common.optim()
  config.label_smoothing = 0.0
  # init_from: a train.classify workdir whose best checkpoint initializes every parameter that
  # matches (the head only if the number of classes is the same); pretrained: NAME:FILE, a weight
  # file converted onto zoo model NAME, used the same way; freeze_backbone: train the head alone.
  # See docs/transfer.md.
  config.transfer = ml_collections.ConfigDict(dict(init_from='', pretrained='',
                                                   freeze_backbone=False))
  return config
