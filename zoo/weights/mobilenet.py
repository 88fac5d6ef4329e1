"""MobileNetV2/V3 weights from torchvision, timm and Keras applications (zoo.mobilenet).

  - torchvision `mobilenet_v2`, `mobilenet_v3_small`, `mobilenet_v3_large` state dicts;
  - timm `mobilenetv2_100`, `mobilenetv3_small_100`, `mobilenetv3_large_100` state dicts (timm's
    `tf_mobilenetv3_*` ports also need the overrides `bn_epsilon=1e-3, padding='same'`, which
    their tensors do not tell apart);
  - Keras applications `MobileNetV2`, `MobileNetV3Small` and `MobileNetV3Large` (alpha 1.0,
    not minimalistic) weights, keys '<layer name>/<weight name>'. Keras' MobileNetV3 is
    torchvision's network with TensorFlow's padding; it applies the layers after the pooling
    ('conv_2', 'logits') as 1×1 convs, the same as Dense layers. Its input rescaling to [-1, 1]
    (`include_preprocessing`) has no weights: zoo's model takes the rescaled images.
"""

import dataclasses
import functools
from typing import Any, Mapping

import numpy as np

from zoo.inverted_residual import BlockConfig
from zoo.pretrained_config import PREPROCESSING, PretrainedConfig
from zoo.registry import create_model
from zoo.weights import inverted_residual as names
from zoo.weights.mapping import Path, Rule

SOURCES = ('torchvision', 'timm', 'keras')
_SUPPORTED = {'mobilenet_v2': SOURCES, 'mobilenet_v3_small': SOURCES,
              'mobilenet_v3_large': SOURCES}

# Where the source keeps the last Dense and which axis of its kernel counts the classes.
_HEADS = {('torchvision', 'v2'): ('classifier.1.weight', 0),
          ('torchvision', 'v3'): ('classifier.3.weight', 0),
          ('timm', 'v2'): ('classifier.weight', 0), ('timm', 'v3'): ('classifier.weight', 0),
          ('keras', 'v2'): ('predictions/kernel', 1), ('keras', 'v3'): ('logits/kernel', 3)}


def _check(model_name: str, source: str) -> str:
  if source not in _SUPPORTED.get(model_name, ()):
    raise names.unsupported('MobileNet', model_name, source, _SUPPORTED)
  return 'v2' if model_name == 'mobilenet_v2' else 'v3'


def overrides(model_name: str, source: str, tensors: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """The model fields the source's weights need: BatchNorm settings, padding, classes."""
  version = _check(model_name, source)
  fields = {'num_classes': names.num_classes(tensors, *_HEADS[source, version])}
  if source == 'keras':
    return {**fields, 'bn_epsilon': 1e-3, 'bn_momentum': 0.999, 'padding': 'same'}
  if source == 'torchvision' and version == 'v3':
    return {**fields, 'bn_epsilon': 1e-3, 'bn_momentum': 0.99, 'padding': 'torch'}
  return {**fields, 'bn_epsilon': 1e-5, 'bn_momentum': 0.9, 'padding': 'torch'}


def config(model_name: str, source: str, base: PretrainedConfig) -> PretrainedConfig:
  """Keras' MobileNets take [-1, 1] RGB images (its 'tf' mode; MobileNetV3's own rescaling)."""
  del model_name
  return dataclasses.replace(base, preprocessing=PREPROCESSING['tf']) if source == 'keras' else base


def rule(model_name: str, source: str) -> Rule:
  """Where each variable of the zoo model `model_name` comes from in the source's tensors."""
  version = _check(model_name, source)
  stages = create_model(model_name).stages()
  module_names = {('torchvision', 'v2'): _torchvision_v2, ('torchvision', 'v3'): _torchvision_v3,
                  ('timm', 'v2'): names.timm_module, ('timm', 'v3'): _timm_v3,
                  ('keras', 'v2'): _keras_v2, ('keras', 'v3'): _keras_v3}
  module_name = functools.partial(module_names[source, version], stages)
  if source == 'keras':
    keras_rule = names.keras_rule(module_name)
    return _keras_v3_dense(keras_rule) if version == 'v3' else keras_rule
  torch_rule = names.torch_rule(module_name)
  return _timm_v3_pre_logits(torch_rule) if (source, version) == ('timm', 'v3') else torch_rule


def _num_blocks(stages: list[list[BlockConfig]]) -> int:
  return sum(len(stage) for stage in stages)


def _torchvision_v2(stages, path: Path) -> str:
  # features.0 stem, features.1-17 blocks, features.18 last conv; classifier.1 the head.
  block = names.block_at(stages, path)
  if block is None:
    return names.torchvision_outer(path, _num_blocks(stages) + 1, {('head',): 'classifier.1'})
  i, j, config = block
  prefix = f'features.{names.flat_index(stages, i, j) + 1}.conv'
  # A Sequential of [expand (conv .0, bn .1)], depthwise (.0, .1), project conv, project bn.
  n = ['expand', 'depthwise', 'project'].index(path[1]) - (not config.has_expand)
  if path[1] == 'project':
    return f'{prefix}.{n + (path[2] == "bn")}'
  return f'{prefix}.{n}.{"0" if path[2] == "conv" else "1"}'


def _torchvision_v3(stages, path: Path) -> str:
  # features.0 stem, features.1-N blocks, features.N+1 last conv; classifier.0 and .3 Dense.
  block = names.block_at(stages, path)
  if block is None:
    return names.torchvision_outer(path, _num_blocks(stages) + 1,
                                   {('pre_logits',): 'classifier.0', ('head',): 'classifier.3'})
  i, j, config = block
  return names.torchvision_block(f'features.{names.flat_index(stages, i, j) + 1}.block', config,
                                 path[1:])


def _timm_v3(stages, path: Path) -> str:
  # MobileNetV3 keeps its last 1×1 conv unit as one more stage of blocks (a ConvBnAct).
  if path[0] == 'head_conv':
    return f'blocks.{len(stages)}.0.{"conv" if path[1] == "conv" else "bn1"}'
  return names.timm_module(stages, path)


def _timm_v3_pre_logits(torch_rule: Rule) -> Rule:
  """timm's MobileNetV3 applies 'pre_logits' as a 1×1 conv, 'conv_head', after the pooling."""
  def rule(collection: str, path: Path):
    if path == ('pre_logits', 'kernel'):
      return lambda tensors: tensors.take('conv_head.weight')[:, :, 0, 0].T
    if path == ('pre_logits', 'bias'):
      return 'conv_head.bias'
    return torch_rule(collection, path)
  return rule


def _keras_v2(stages, path: Path) -> str:
  block = names.block_at(stages, path)
  if block is None:
    return {('stem', 'conv'): 'Conv1', ('stem', 'bn'): 'bn_Conv1',
            ('head_conv', 'conv'): 'Conv_1', ('head_conv', 'bn'): 'Conv_1_bn',
            ('head',): 'predictions'}[path]
  i, j, _ = block
  index = names.flat_index(stages, i, j)
  prefix = f'block_{index}' if index else 'expanded_conv'
  return f'{prefix}_{path[1]}{"_BN" if path[2] == "bn" else ""}'


def _keras_v3(stages, path: Path) -> str:
  block = names.block_at(stages, path)
  if block is None:
    return {('stem', 'conv'): 'conv', ('stem', 'bn'): 'conv_bn',
            ('head_conv', 'conv'): 'conv_1', ('head_conv', 'bn'): 'conv_1_bn',
            ('pre_logits',): 'conv_2', ('head',): 'logits'}[path]
  i, j, _ = block
  index = names.flat_index(stages, i, j)
  prefix = f'expanded_conv_{index}' if index else 'expanded_conv'
  if path[1] == 'se':
    return f'{prefix}_squeeze_excite_conv{"" if path[2] == "reduce" else "_1"}'
  return f'{prefix}_{path[1]}{"_bn" if path[2] == "bn" else ""}'


def _keras_v3_dense(keras_rule: Rule) -> Rule:
  """Keras' MobileNetV3 applies 'pre_logits' and 'head' as 1×1 convs: (1, 1, in, out) kernels."""
  def rule(collection: str, path: Path):
    where = keras_rule(collection, path)
    if path in (('pre_logits', 'kernel'), ('head', 'kernel')):
      return lambda tensors: tensors.take(where)[0, 0]
    return where
  return rule
