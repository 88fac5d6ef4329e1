"""ResNet weights: torchvision's and timm's resnet18-152 (the same keys), Keras' ResNet50.

torch keys: 'conv1', 'bn1', 'layer{i}.{j}.conv{k}'/'bn{k}', 'layer{i}.{j}.downsample.0'/'.1',
'fc'. Keras keys: 'conv1_conv', 'conv1_bn', 'conv{i+1}_block{j}_{k}_conv'/'_bn' (k = 0 for
the shortcut), 'predictions'. Keras' ResNet50 is v1 (stride on the first 1×1), keeps conv
biases before BatchNorm and uses BatchNorm epsilon 1.001e-5: `overrides` sets those fields.
"""

import dataclasses
from typing import Mapping

import numpy as np

from zoo.pretrained_config import PREPROCESSING, PretrainedConfig
from zoo.weights import mapping

SOURCES = ('torchvision', 'timm', 'keras')

_KERAS_LEAVES = {('params', 'kernel'): 'kernel', ('params', 'bias'): 'bias',
                 ('params', 'scale'): 'gamma', ('batch_stats', 'mean'): 'moving_mean',
                 ('batch_stats', 'var'): 'moving_variance'}


def overrides(model_name: str, source: str, tensors: Mapping[str, np.ndarray]) -> dict:
  del model_name
  if source == 'keras':
    head = tensors.get('predictions/kernel')
    return {'stride_in_1x1': True, 'conv_bias': True, 'bn_epsilon': 1.001e-5,
            'num_classes': 0 if head is None else head.shape[1]}
  head = tensors.get('fc.weight')
  return {'num_classes': 0 if head is None else head.shape[0]}


def _torch_module(path: tuple[str, ...]) -> str:
  """The torch module of a ConvBN's conv or bn.

  ('stage1_block2', 'conv1', 'bn') -> 'layer1.1.bn1'.
  """
  *block, unit, layer = path
  if not block:  # the stem
    return 'conv1' if layer == 'conv' else 'bn1'
  stage, index = block[0].removeprefix('stage').split('_block')
  prefix = f'layer{stage}.{int(index) - 1}'
  if unit == 'shortcut':
    return f'{prefix}.downsample.{0 if layer == "conv" else 1}'
  return f'{prefix}.{unit if layer == "conv" else unit.replace("conv", "bn")}'


def _keras_module(path: tuple[str, ...]) -> str:
  """('stage1_block2', 'conv1', 'bn') -> 'conv2_block2_1_bn'; the stem is 'conv1_conv/_bn'."""
  *block, unit, layer = path
  if not block:
    return f'conv1_{layer}'
  stage, index = block[0].removeprefix('stage').split('_block')
  k = 0 if unit == 'shortcut' else unit.removeprefix('conv')
  return f'conv{int(stage) + 1}_block{index}_{k}_{layer}'


def rule(model_name: str, source: str) -> mapping.Rule:
  del model_name

  def where(collection: str, path: tuple[str, ...]) -> str:
    leaf = path[-1]
    if path[0] == 'head':
      if source == 'keras':
        return f'predictions/{leaf}'
      return f'fc.{"weight" if leaf == "kernel" else leaf}'
    if source == 'keras':
      if (collection, leaf) == ('params', 'bias') and path[-2] == 'bn':
        return f'{_keras_module(path[:-1])}/beta'
      return f'{_keras_module(path[:-1])}/{_KERAS_LEAVES[collection, leaf]}'
    module = _torch_module(path[:-1])
    if path[-2] == 'conv':
      return f'{module}.weight' if leaf == 'kernel' else f'{module}.bias'
    return mapping.torch_batch_norm(collection, module, leaf)

  return where


def config(model_name: str, source: str, base: PretrainedConfig) -> PretrainedConfig:
  del model_name
  if source == 'keras':  # keras.applications.resnet.preprocess_input: 'caffe'
    return dataclasses.replace(base, preprocessing=PREPROCESSING['caffe'])
  return base
