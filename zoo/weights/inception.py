"""Inception-v3 weights: torchvision's inception_v3 and pytorch-fid's FID network.

Both are torchvision's Inception3 state dict; zoo's submodules carry its names
('Mixed_6b.branch7x7_2.conv.weight', 'fc' for the head). pytorch-fid's has 1008 classes and the
2015 graph's pooling (`pooling='fid'`); torchvision's 1000 classes and its own pooling. The
auxiliary classifier ('AuxLogits.*'), used only in training, is left out.
"""

from typing import Mapping

import numpy as np

from zoo.pretrained_config import PREPROCESSING, PretrainedConfig
from zoo.weights import mapping

SOURCES = ('torchvision', 'pytorch_fid')
FID_CLASSES = 1008


def detect_source(model_name: str, tensors: Mapping[str, np.ndarray]) -> str:
  del model_name
  head = tensors.get('fc.weight')
  return 'pytorch_fid' if head is not None and head.shape[0] == FID_CLASSES else 'torchvision'


def overrides(model_name: str, source: str, tensors: Mapping[str, np.ndarray]) -> dict:
  del model_name
  head = tensors.get('fc.weight')
  return {'pooling': 'fid' if source == 'pytorch_fid' else 'torchvision',
          'num_classes': 0 if head is None else head.shape[0]}


def ignored(model_name: str, source: str) -> tuple[str, ...]:
  del model_name, source
  return ('AuxLogits.*',)


def rule(model_name: str, source: str) -> mapping.Rule:
  del model_name, source

  def where(collection: str, path: tuple[str, ...]) -> str:
    modules = '.'.join('fc' if name == 'head' else name for name in path[:-1])
    if path[-2] == 'bn':
      return mapping.torch_batch_norm(collection, modules, path[-1])
    return f'{modules}.{"weight" if path[-1] == "kernel" else path[-1]}'

  return where


def config(model_name: str, source: str, base: PretrainedConfig) -> PretrainedConfig:
  """torchvision's weights take ImageNet-normalized input and map it to [-1, 1] inside
  (`transform_input=True`); zoo's model has no such step, so its input is [-1, 1] directly."""
  del model_name
  return base if source == 'pytorch_fid' else PretrainedConfig(
      input_size=base.input_size, preprocessing=PREPROCESSING['tf'], interpolation='bilinear',
      crop_pct=0.875, num_classes=base.num_classes)
