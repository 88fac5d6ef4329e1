"""VGG weights: torchvision's vgg11-19 and vgg11_bn-19_bn, Keras' VGG16.

torch keys: 'features.<n>' numbered through torchvision's Sequential (conv, [bn,] relu per
conv, a max-pool per stage), 'classifier.0'/'.3'/'.6' for fc1, fc2 and the head. Keras keys:
'block{i}_conv{j}', 'fc1', 'fc2', 'predictions'. torch flattens the last map in CHW order,
Keras and zoo in HWC: fc1's kernel is reordered (`mapping.torch_flattened_dense`). The pool
size and classifier width are read from fc1, so smaller classifiers convert too.
"""

from typing import Mapping

import numpy as np

from zoo.registry import create_model
from zoo.weights import mapping

SOURCES = ('torchvision', 'keras')

_TORCH_DENSE = {'fc1': 'classifier.0', 'fc2': 'classifier.3', 'head': 'classifier.6'}
_KERAS_DENSE = {'fc1': 'fc1', 'fc2': 'fc2', 'head': 'predictions'}
_KERAS_LEAVES = {('params', 'kernel'): 'kernel', ('params', 'bias'): 'bias'}


def overrides(model_name: str, source: str, tensors: Mapping[str, np.ndarray]) -> dict:
  channels = create_model(model_name).widths[-1]
  if source == 'keras':
    fc1, head = tensors.get('fc1/kernel'), tensors.get('predictions/kernel')
    size, width = fc1.shape if fc1 is not None else (None, None)
    classes = 0 if head is None else head.shape[1]
  else:
    fc1, head = tensors.get('classifier.0.weight'), tensors.get('classifier.6.weight')
    width, size = fc1.shape if fc1 is not None else (None, None)
    classes = 0 if head is None else head.shape[0]
  if size is None:  # Keras' include_top=False: the convolutions alone, averaged
    return {'num_classes': classes, 'classifier_width': 0} if source == 'keras' else {
        'num_classes': classes}
  return {'num_classes': classes, 'classifier_width': width,
          'pool_size': mapping.flattened_side(size, channels)}


def _torch_features(model_name: str) -> dict[str, int]:
  """{'stage{i}_conv{j}': index of its conv in torchvision's `features`}."""
  model = create_model(model_name)
  index, where = 0, {}
  for i, depth in enumerate(model.stage_sizes, 1):
    for j in range(1, depth + 1):
      where[f'stage{i}_conv{j}'] = index
      index += 3 if model.batch_norm else 2  # conv, [bn,] relu
    index += 1  # max-pool
  return where


def rule(model_name: str, source: str) -> mapping.Rule:
  channels = create_model(model_name).widths[-1]
  features = _torch_features(model_name)

  def where(collection: str, path: tuple[str, ...]):
    leaf = path[-1]
    if source == 'keras':
      if path[0] in _KERAS_DENSE:
        return f'{_KERAS_DENSE[path[0]]}/{leaf}'
      stage, conv = path[0].removeprefix('stage').split('_conv')
      return f'block{stage}_conv{conv}/{leaf}'  # no BatchNorm in Keras' VGG16
    if path[0] in _TORCH_DENSE:
      key = _TORCH_DENSE[path[0]]
      if path == ('fc1', 'kernel'):
        return mapping.torch_flattened_dense(f'{key}.weight', channels)
      return f'{key}.{"weight" if leaf == "kernel" else leaf}'
    index = features[path[0]]
    if path[1] == 'conv':
      return f'features.{index}.{"weight" if leaf == "kernel" else leaf}'
    return mapping.torch_batch_norm(collection, f'features.{index + 1}', leaf)

  return where
