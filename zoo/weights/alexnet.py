"""AlexNet weights: torchvision's alexnet.

Keys 'features.0'/'.3'/'.6'/'.8'/'.10' for conv1-conv5, 'classifier.1'/'.4'/'.6' for fc1, fc2
and the head; fc1's kernel is reordered from torch's CHW flatten to zoo's HWC.
"""

from typing import Mapping

import numpy as np

from zoo.weights import mapping

SOURCES = ('torchvision',)

_KEYS = {'conv1': 'features.0', 'conv2': 'features.3', 'conv3': 'features.6',
         'conv4': 'features.8', 'conv5': 'features.10', 'fc1': 'classifier.1',
         'fc2': 'classifier.4', 'head': 'classifier.6'}
_CHANNELS = 256  # of conv5, which fc1 flattens


def overrides(model_name: str, source: str, tensors: Mapping[str, np.ndarray]) -> dict:
  del model_name, source
  fields = {'num_classes': tensors['classifier.6.weight'].shape[0]
            if 'classifier.6.weight' in tensors else 0}
  if 'classifier.1.weight' in tensors:
    width, size = tensors['classifier.1.weight'].shape
    fields.update(classifier_width=width, pool_size=mapping.flattened_side(size, _CHANNELS))
  return fields


def rule(model_name: str, source: str) -> mapping.Rule:
  del model_name, source

  def where(collection: str, path: tuple[str, ...]):
    del collection
    if path == ('fc1', 'kernel'):
      return mapping.torch_flattened_dense('classifier.1.weight', _CHANNELS)
    return f'{_KEYS[path[0]]}.{"weight" if path[-1] == "kernel" else path[-1]}'

  return where
