"""Naming shared by the MobileNet and EfficientNet converters.

zoo names the variables of these models by module: 'stem', 'stage{i}_block{j}' (its 'expand',
'depthwise', 'se' and 'project' parts, see zoo.inverted_residual), 'head_conv', 'pre_logits',
'head'; a conv-BatchNorm unit has the children 'conv' and 'bn', squeeze-excitation 'reduce' and
'expand'. A converter gives, for the module path of a variable (its path without the leaf), the
name of the module in the source; `torch_rule` and `keras_rule` turn that into a `Rule` by adding
the source's leaf names.
"""

import re
from typing import Callable, Mapping, Sequence

import numpy as np

from zoo.inverted_residual import BlockConfig
from zoo.weights import mapping

Path = mapping.Path
ModuleName = Callable[[Path], str]
Stages = Sequence[Sequence[BlockConfig]]

_BLOCK = re.compile(r'stage(\d+)_block(\d+)$')


def block_position(module: str) -> tuple[int, int] | None:
  """(i, j) of the zoo module 'stage{i}_block{j}', or None for another module."""
  match = _BLOCK.match(module)
  return (int(match[1]), int(match[2])) if match else None


def block_at(stages: Stages, path: Path) -> tuple[int, int, BlockConfig] | None:
  """(i, j, config) of the block a module path starts in, or None outside the blocks."""
  position = block_position(path[0])
  if position is None:
    return None
  i, j = position
  return i, j, stages[i - 1][j - 1]


def flat_index(stages: Stages, i: int, j: int) -> int:
  """The 0-based position of block (i, j) among all blocks."""
  return sum(len(stage) for stage in stages[:i - 1]) + j - 1


def torch_rule(module_name: ModuleName) -> mapping.Rule:
  """A rule for a torch state dict, given the torch module of each zoo module."""
  def rule(collection: str, path: Path) -> str:
    prefix = module_name(path[:-1])
    if path[-2] == 'bn':
      return mapping.torch_batch_norm(collection, prefix, path[-1])
    return f'{prefix}.{"weight" if path[-1] == "kernel" else "bias"}'
  return rule


def keras_rule(layer_name: ModuleName) -> mapping.Rule:
  """A rule for Keras weights ('<layer>/<weight>'), given the Keras layer of each zoo module.

  A depthwise kernel is 'depthwise_kernel' in the Keras 2 weight files of Keras applications and
  'kernel' in Keras 3; either is read.
  """
  def rule(collection: str, path: Path):
    layer = layer_name(path[:-1])
    if path[-2] == 'bn':
      return mapping.keras_norm(collection, layer, path[-1])
    if path[-3:] == ('depthwise', 'conv', 'kernel'):
      def depthwise(tensors: mapping.Tensors) -> np.ndarray:
        key = f'{layer}/depthwise_kernel'
        return mapping.keras_depthwise(tensors.take(key if key in tensors else f'{layer}/kernel'))
      return depthwise
    return f'{layer}/{path[-1]}'
  return rule


def torchvision_outer(path: Path, last: int, classifier: Mapping[Path, str]) -> str:
  """torchvision's stem ('features.0'), last conv unit ('features.{last}'), each a Sequential of
  (conv .0, bn .1), and the Linear layers of its `classifier` ({zoo module path: torch name})."""
  units = {'stem': 'features.0', 'head_conv': f'features.{last}'}
  if path[0] in units:
    return f'{units[path[0]]}.{"0" if path[1] == "conv" else "1"}'
  return classifier[path]


def torchvision_block(prefix: str, config: BlockConfig, part: Path) -> str:
  """torchvision's MobileNetV3/EfficientNet block: a Sequential `{prefix}` of [expand],
  depthwise, [squeeze-excitation (fc1, fc2)], project; each conv unit is (conv .0, bn .1)."""
  order = ['expand'] * config.has_expand + ['depthwise'] + ['se'] * bool(config.se_features)
  order.append('project')
  name = f'{prefix}.{order.index(part[0])}'
  if part[0] == 'se':
    return f'{name}.{"fc1" if part[1] == "reduce" else "fc2"}'
  return f'{name}.{"0" if part[1] == "conv" else "1"}'


def timm_block(prefix: str, config: BlockConfig, part: Path) -> str:
  """timm's InvertedResidual (conv_pw/bn1, conv_dw/bn2, se, conv_pwl/bn3) or, without the
  expansion, DepthwiseSeparableConv (conv_dw/bn1, se, conv_pw/bn2) at `prefix`."""
  if part[0] == 'se':
    return f'{prefix}.se.conv_{part[1]}'
  if config.has_expand:
    names = {'expand': ('conv_pw', 'bn1'), 'depthwise': ('conv_dw', 'bn2'),
             'project': ('conv_pwl', 'bn3')}
  else:
    names = {'depthwise': ('conv_dw', 'bn1'), 'project': ('conv_pw', 'bn2')}
  conv, bn = names[part[0]]
  return f'{prefix}.{conv if part[1] == "conv" else bn}'


def timm_module(stages: Stages, path: Path) -> str:
  """The module of timm's EfficientNet-style models (EfficientNet, MobileNetV2): conv_stem/bn1,
  blocks.{stage}.{block}, conv_head/bn2, classifier."""
  block = block_at(stages, path)
  if block is None:
    return {('stem', 'conv'): 'conv_stem', ('stem', 'bn'): 'bn1',
            ('head_conv', 'conv'): 'conv_head', ('head_conv', 'bn'): 'bn2',
            ('head',): 'classifier'}[path]
  i, j, config = block
  return timm_block(f'blocks.{i - 1}.{j - 1}', config, path[1:])


def keras_effnet_block(prefix: str, part: Path) -> str:
  """Keras' EfficientNet block layers: '{prefix}expand_conv', '{prefix}bn', '{prefix}se_reduce'…"""
  names = {('expand', 'conv'): 'expand_conv', ('expand', 'bn'): 'expand_bn',
           ('depthwise', 'conv'): 'dwconv', ('depthwise', 'bn'): 'bn',
           ('se', 'reduce'): 'se_reduce', ('se', 'expand'): 'se_expand',
           ('project', 'conv'): 'project_conv', ('project', 'bn'): 'project_bn'}
  return f'{prefix}{names[part]}'


def num_classes(tensors: Mapping[str, np.ndarray], head_key: str, axis: int) -> int:
  """The classes of the head at `head_key` (`axis` of its kernel), 0 for a headless file."""
  return int(np.shape(tensors[head_key])[axis]) if head_key in tensors else 0


def unsupported(family: str, model_name: str, source: str,
                supported: Mapping[str, Sequence[str]]) -> mapping.ConversionError:
  """The error for a (model, source) pair the family has no converter for."""
  sources = supported.get(model_name)
  if sources is None:
    return mapping.ConversionError(
        f'{model_name!r} is not one of the {family} models the converters cover: '
        f'{", ".join(sorted(supported))}')
  return mapping.ConversionError(
      f'no {source} weights converter for {model_name!r}: its weights can be read from '
      f'{", ".join(sources)}')
