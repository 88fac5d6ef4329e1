"""torchvision, timm and Keras weights for zoo.convnext's ConvNeXt.

The three compute the same function (LayerNorm epsilon 1e-6 everywhere); the names differ, and
the layer scale is (C, 1, 1) in torchvision ('layer_scale'), (C,) in timm ('gamma') and Keras
(a LayerScale layer's one weight, named by Keras' counter: 'variable_7').

  - torchvision: 'features.0.{0,1}' (stem conv, LayerNorm), 'features.{2i}.{0,1}' (LayerNorm and
    conv before stage i+1), 'features.{2i+1}.{j}.{block.0, block.2, block.3, block.5,
    layer_scale}' (dwconv, norm, fc1, fc2), 'classifier.{0,2}' (LayerNorm, head).
  - timm: 'stem.{0,1}', 'stages.{i}.downsample.{0,1}', 'stages.{i}.blocks.{j}.{conv_dw, norm,
    mlp.fc1, mlp.fc2, gamma}', 'head.norm', 'head.fc'.
  - Keras applications (ConvNeXtTiny …): keys '<layer name>/<weight name>', layers named after
    the model ('convnext_tiny_stem_conv', 'convnext_tiny_downsampling_layernorm_{i}',
    'convnext_tiny_stage_{i}_block_{j}_{depthwise_conv, layernorm, pointwise_conv_1,
    pointwise_conv_2, layer_scale}', 'convnext_tiny_head_{layernorm, dense}'), so the zoo model
    name must be Keras' model name. Keras' input Normalization layer (ImageNet mean and std on
    0-255 pixels) has no weights in the file: zoo's model takes inputs normalized by the same
    mean and std on 0-1 pixels, which is the same input.
"""

from typing import Mapping

import numpy as np

from zoo.weights import mapping
from zoo.weights.mapping import ConversionError, Path, keras_norm, only_weight, torch_param

SOURCES = ('torchvision', 'timm', 'keras')

_HEAD = {'torchvision': 'classifier.2.weight', 'timm': 'head.fc.weight'}
_TORCHVISION_BLOCK = {'dwconv': 'block.0', 'norm': 'block.2', 'fc1': 'block.3', 'fc2': 'block.5'}
_TIMM_BLOCK = {'dwconv': 'conv_dw', 'norm': 'norm', 'fc1': 'mlp.fc1', 'fc2': 'mlp.fc2'}
_KERAS_BLOCK = {'dwconv': 'depthwise_conv', 'norm': 'layernorm', 'fc1': 'pointwise_conv_1',
                'fc2': 'pointwise_conv_2'}


def _check_source(source: str) -> None:
  if source not in SOURCES:
    raise ConversionError(f'ConvNeXt weights come from {", ".join(SOURCES)}, not {source!r}')


def _head_key(model_name: str, source: str) -> str:
  return f'{model_name}_head_dense/kernel' if source == 'keras' else _HEAD[source]


def overrides(model_name: str, source: str, tensors: Mapping[str, np.ndarray]) -> dict:
  """The ConvNeXt fields the weights need: the number of classes and the LayerNorm epsilon."""
  _check_source(source)
  head = _head_key(model_name, source)
  # Keras' Dense kernel is (in, out); torch's Linear weight is (out, in).
  classes = tensors[head].shape[1 if source == 'keras' else 0] if head in tensors else 0
  return dict(num_classes=classes, layer_norm_epsilon=1e-6)


def _parse(path: Path) -> tuple[str, int, int, str]:
  """('stage3_block2', 'fc1', 'kernel') -> ('block', 3, 2, 'fc1'); ('stage2_downsample_conv',
  'bias') -> ('downsample_conv', 2, 0, ''); ('stem_conv', 'kernel') -> ('stem_conv', 0, 0, '')."""
  name = path[0]
  if not name.startswith('stage'):
    return name, 0, 0, ''
  stage, part = name.removeprefix('stage').split('_', 1)
  if part.startswith('block'):
    return 'block', int(stage), int(part.removeprefix('block')), '/'.join(path[1:-1])
  return part, int(stage), 0, ''


def _torchvision(collection: str, path: Path):
  del collection  # ConvNeXt has parameters only
  part, stage, block, module = _parse(path)
  leaf = path[-1]
  if part == 'block':
    prefix = f'features.{2 * stage - 1}.{block - 1}'
    if leaf == 'layer_scale':
      return lambda t: t.take(f'{prefix}.layer_scale').reshape(-1)
    return torch_param(f'{prefix}.{_TORCHVISION_BLOCK[module]}', leaf)
  names = {'stem_conv': 'features.0.0', 'stem_norm': 'features.0.1',
           'downsample_norm': f'features.{2 * stage - 2}.0',
           'downsample_conv': f'features.{2 * stage - 2}.1',
           'head_norm': 'classifier.0', 'head': 'classifier.2'}
  return torch_param(names[part], leaf)


def _timm(collection: str, path: Path) -> str:
  del collection
  part, stage, block, module = _parse(path)
  leaf = path[-1]
  if part == 'block':
    prefix = f'stages.{stage - 1}.blocks.{block - 1}'
    if leaf == 'layer_scale':
      return f'{prefix}.gamma'
    return torch_param(f'{prefix}.{_TIMM_BLOCK[module]}', leaf)
  names = {'stem_conv': 'stem.0', 'stem_norm': 'stem.1',
           'downsample_norm': f'stages.{stage - 1}.downsample.0',
           'downsample_conv': f'stages.{stage - 1}.downsample.1',
           'head_norm': 'head.norm', 'head': 'head.fc'}
  return torch_param(names[part], leaf)


def _keras(model_name: str):
  def keras_rule(collection: str, path: Path):
    part, stage, block, module = _parse(path)
    leaf = path[-1]
    if part == 'block':
      layer = f'{model_name}_stage_{stage - 1}_block_{block - 1}'
      if leaf == 'layer_scale':
        return only_weight(f'{layer}_layer_scale')
      layer = f'{layer}_{_KERAS_BLOCK[module]}'
    else:
      layer = {'stem_conv': f'{model_name}_stem_conv',
               'stem_norm': f'{model_name}_stem_layernorm',
               'downsample_norm': f'{model_name}_downsampling_layernorm_{stage - 2}',
               'downsample_conv': f'{model_name}_downsampling_conv_{stage - 2}',
               'head_norm': f'{model_name}_head_layernorm',
               'head': f'{model_name}_head_dense'}[part]
    if part.endswith('norm') or module == 'norm':
      return keras_norm(collection, layer, leaf)
    return f'{layer}/{leaf}'
  return keras_rule


def rule(model_name: str, source: str) -> mapping.Rule:
  """Where each ConvNeXt variable comes from in `source`'s weights."""
  _check_source(source)
  if source == 'keras':
    return _keras(model_name)
  return _torchvision if source == 'torchvision' else _timm
