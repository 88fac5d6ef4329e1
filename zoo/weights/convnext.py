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
    name must be Keras' model name. A file without the top (`include_top=False`) loads as the
    headless model, its last LayerNorm ('layer_normalization') as the head's: the same function
    as Keras' `pooling='avg'`. Keras' input Normalization layer (ImageNet mean and std on
    0-255 pixels) has no weights in the file: zoo's model takes inputs normalized by the same
    mean and std on 0-1 pixels, which is the same input.
"""

from typing import Mapping

import numpy as np

from zoo.weights import mapping
from zoo.weights.mapping import ConversionError, Path, keras_norm, only_weight, torch_param

SOURCES = ('torchvision', 'timm', 'keras')

# zoo module -> its name in each source, in the order of SOURCES (a block's modules are appended
# to its name). The fields: {model}, the model's name (Keras names its layers after it);
# {stage}, {block}, 0-based; {down} and {features}, torchvision's indices of the downsampling
# before a stage and of the stage; {previous}, Keras' index of the downsampling before a stage.
_TABLE = {
    'stem_conv': ('features.0.0', 'stem.0', '{model}_stem_conv'),
    'stem_norm': ('features.0.1', 'stem.1', '{model}_stem_layernorm'),
    'downsample_norm': ('features.{down}.0', 'stages.{stage}.downsample.0',
                        '{model}_downsampling_layernorm_{previous}'),
    'downsample_conv': ('features.{down}.1', 'stages.{stage}.downsample.1',
                        '{model}_downsampling_conv_{previous}'),
    'block': ('features.{features}.{block}', 'stages.{stage}.blocks.{block}',
              '{model}_stage_{stage}_block_{block}'),
    'dwconv': ('.block.0', '.conv_dw', '_depthwise_conv'),
    'norm': ('.block.2', '.norm', '_layernorm'),
    'fc1': ('.block.3', '.mlp.fc1', '_pointwise_conv_1'),
    'fc2': ('.block.5', '.mlp.fc2', '_pointwise_conv_2'),
    'layer_scale': ('.layer_scale', '.gamma', '_layer_scale'),
    'head_norm': ('classifier.0', 'head.norm', '{model}_head_layernorm'),
    'head': ('classifier.2', 'head.fc', '{model}_head_dense'),
}
_NAMES = {source: {module: names[i] for module, names in _TABLE.items()}
          for i, source in enumerate(SOURCES)}


def _check_source(source: str) -> None:
  if source not in SOURCES:
    raise ConversionError(f'ConvNeXt weights come from {", ".join(SOURCES)}, not {source!r}')


def overrides(model_name: str, source: str, tensors: Mapping[str, np.ndarray]) -> dict:
  """The ConvNeXt fields the weights need: the number of classes and the LayerNorm epsilon."""
  _check_source(source)
  head = _NAMES[source]['head'].format(model=model_name)
  # Keras' Dense kernel is (in, out); torch's Linear weight is (out, in).
  head, axis = (f'{head}/kernel', 1) if source == 'keras' else (f'{head}.weight', 0)
  return dict(num_classes=tensors[head].shape[axis] if head in tensors else 0,
              layer_norm_epsilon=1e-6)


def _parse(path: Path) -> tuple[str, int, int, str]:
  """The part of the model, its 0-based stage and block, and the module inside a block:
  ('stage3_block2', 'fc1', 'kernel') -> ('block', 2, 1, 'fc1');
  ('stage2_downsample_conv', 'bias') -> ('downsample_conv', 1, 0, '');
  ('stem_conv', 'kernel') -> ('stem_conv', 0, 0, '')."""
  name = path[0]
  if not name.startswith('stage'):
    return name, 0, 0, ''
  stage, part = name.removeprefix('stage').split('_', 1)
  if part.startswith('block'):
    return 'block', int(stage) - 1, int(part.removeprefix('block')) - 1, '/'.join(path[1:-1])
  return part, int(stage) - 1, 0, ''


def rule(model_name: str, source: str) -> mapping.Rule:
  """Where each ConvNeXt variable comes from in `source`'s weights."""
  _check_source(source)
  names = _NAMES[source]

  def where(collection: str, path: Path):
    part, stage, block, module = _parse(path)
    name = names[part].format(model=model_name, stage=stage, block=block, down=2 * stage,
                              features=2 * stage + 1, previous=stage - 1)
    leaf = path[-1]
    if leaf == 'layer_scale':
      name += names['layer_scale']
      if source == 'keras':
        return only_weight(name)
      return lambda t: t.take(name).reshape(-1)  # torchvision's is (C, 1, 1)
    if module:
      name += names[module]
    if source != 'keras':
      return torch_param(name, leaf)
    if part == 'head_norm':
      return _keras_head_norm(keras_norm(collection, name, leaf))
    if part.endswith('norm') or module == 'norm':
      return keras_norm(collection, name, leaf)
    return f'{name}/{leaf}'

  return where


def _keras_head_norm(key: str):
  """Keras' head LayerNorm at `key`; in a file without the top, the model's last layer: an
  unnamed LayerNormalization after the pooling ('layer_normalization', numbered by Keras'
  counter), which is zoo's head_norm when the file's model pooled by average."""
  def take(tensors: mapping.Tensors) -> np.ndarray:
    if key in tensors:
      return tensors.take(key)
    weight = key.rsplit('/', 1)[1]
    found = [k for k in tensors.keys()
             if k.startswith('layer_normalization') and k.endswith(f'/{weight}')]
    return tensors.take(found[0] if len(found) == 1 else key)  # else names the missing key
  return take
