"""EfficientNet-B0 … B7 weights from torchvision, timm and Keras applications (zoo.efficientnet).

  - torchvision `efficientnet_b0` … `efficientnet_b7` state dicts;
  - timm `efficientnet_b0` … state dicts (`.pth` or `.safetensors`). timm's `tf_efficientnet_*`
    ports have the same tensors but were trained in TensorFlow: load them with the overrides
    `bn_epsilon=1e-3, padding='same'`;
  - Keras applications `EfficientNetB0` … `EfficientNetB7` weights, keys '<layer name>/<weight
    name>'. The file's input-normalization layer is left out: zoo's EfficientNet takes inputs
    normalized by the ImageNet mean and standard deviation, which is what Keras' Rescaling(1/255),
    Normalization and Rescaling(1/sqrt(std)) layers compute with the ImageNet weights (their
    Normalization stores the standard deviation as its variance, tensorflow/tensorflow#49930).
    `overrides` checks that the file's values are those and refuses other ones.
"""

import functools
import re
from typing import Any, Mapping

import numpy as np

from zoo.registry import create_model
from zoo.weights import inverted_residual as names
from zoo.weights.mapping import ConversionError, Path, Rule

SOURCES = ('torchvision', 'timm', 'keras')
_MODELS = tuple(f'efficientnet_b{i}' for i in range(8))

_HEADS = {'torchvision': ('classifier.1.weight', 0), 'timm': ('classifier.weight', 0),
          'keras': ('predictions/kernel', 1)}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The Keras model's own normalization layers; Keras 3 saves the Normalization layer's statistics
# (mean, variance, count) as weights. Rescaling layers have none.
_KERAS_NORMALIZATION = re.compile(r'normalization(_\d+)?/(mean|variance|count)$')


def _check(model_name: str, source: str) -> None:
  if model_name not in _MODELS or source not in SOURCES:
    raise names.unsupported('EfficientNet', model_name, source,
                            {name: SOURCES for name in _MODELS})


def overrides(model_name: str, source: str, tensors: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """The model fields the source's weights need: BatchNorm settings, padding, classes."""
  _check(model_name, source)
  fields = {'num_classes': names.num_classes(tensors, *_HEADS[source])}
  if source == 'keras':
    _check_keras_normalization(tensors)
    return {**fields, 'bn_epsilon': 1e-3, 'bn_momentum': 0.99, 'padding': 'same'}
  if source == 'torchvision' and model_name in ('efficientnet_b5', 'efficientnet_b6',
                                                'efficientnet_b7'):
    return {**fields, 'bn_epsilon': 1e-3, 'bn_momentum': 0.99, 'padding': 'torch'}
  return {**fields, 'bn_epsilon': 1e-5, 'bn_momentum': 0.9, 'padding': 'torch'}


def _check_keras_normalization(tensors: Mapping[str, np.ndarray]) -> None:
  for key in tensors:
    match = _KERAS_NORMALIZATION.match(key)
    if not match or match[2] == 'count':
      continue
    expected = IMAGENET_MEAN if match[2] == 'mean' else IMAGENET_STD
    if not np.allclose(np.ravel(tensors[key]), expected, atol=1e-6):
      raise ConversionError(
          f'keras weights: {key!r} is {np.ravel(tensors[key]).round(4).tolist()}, not the '
          f'ImageNet {expected} that zoo expects inputs to be normalized with; normalize inputs '
          f'yourself and drop that layer from the file')


def rule(model_name: str, source: str) -> Rule:
  """Where each variable of the zoo model `model_name` comes from in the source's tensors."""
  _check(model_name, source)
  module_name = functools.partial({'torchvision': _torchvision, 'timm': names.timm_module,
                                   'keras': _keras}[source], create_model(model_name).stages())
  if source == 'keras':
    return names.keras_rule(module_name)
  return names.torch_rule(module_name)


def ignored(model_name: str, source: str) -> tuple[str, ...]:
  """Keras' input-normalization layer stays out of the model (checked by `overrides`)."""
  del model_name
  return ('normalization/*', 'normalization_*/*') if source == 'keras' else ()


def _torchvision(stages, path: Path) -> str:
  # features.0 stem, features.1-7 the stages, features.8 the last conv; classifier.1 the head.
  block = names.block_at(stages, path)
  if block is None:
    return names.torchvision_outer(path, len(stages) + 1, {('head',): 'classifier.1'})
  i, j, config = block
  return names.torchvision_block(f'features.{i}.{j - 1}.block', config, path[1:])


def _keras(stages, path: Path) -> str:
  block = names.block_at(stages, path)
  if block is None:
    return {('stem', 'conv'): 'stem_conv', ('stem', 'bn'): 'stem_bn',
            ('head_conv', 'conv'): 'top_conv', ('head_conv', 'bn'): 'top_bn',
            ('head',): 'predictions'}[path]
  i, j, _ = block
  return names.keras_effnet_block(f'block{i}{chr(ord("a") + j - 1)}_', path[1:])
