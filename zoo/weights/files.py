"""Readers of weight files into a flat {key: np.ndarray} dict with the source's own key names.

  .pth/.pt/.bin  PyTorch state dict (torchvision, timm), or a checkpoint holding one under
                 'state_dict' or 'model'; read with `torch.load(weights_only=True)`.
  .safetensors   timm's format, read with `safetensors.numpy` (no torch needed).
  .h5/.hdf5      Keras: the legacy format (`model.save('x.h5')`, keras.applications' downloads)
                 or Keras 3's `.weights.h5` (`model.save_weights`), told apart by their content.

Keras keys are '<layer name>/<weight name>' (e.g. 'conv1_conv/kernel', 'conv1_bn/moving_mean')
from both Keras formats; see `read_keras`. torch, safetensors and h5py are imported only here,
inside the functions that need them.
"""

import os
import re
from typing import Any

import numpy as np

from zoo.weights.mapping import ConversionError

# The format each extension is read as, and the sources that write it.
FORMATS = {'.pth': 'torch', '.pt': 'torch', '.bin': 'torch', '.safetensors': 'safetensors',
           '.h5': 'keras', '.hdf5': 'keras', '.msgpack': 'zoo'}
FORMAT_SOURCES = {'torch': ('torchvision', 'timm', 'pytorch_fid'), 'safetensors': ('timm',),
                  'keras': ('keras',)}

# Keras 3's `.weights.h5` stores a layer's variables by index; their names in creation order, by
# the layer class (the group's name, snake case, with a '_<n>' suffix for later ones).
KERAS_VARIABLES = {
    'conv2d': ('kernel', 'bias'),
    'conv1d': ('kernel', 'bias'),
    'depthwise_conv2d': ('depthwise_kernel', 'bias'),
    'separable_conv2d': ('depthwise_kernel', 'pointwise_kernel', 'bias'),
    'dense': ('kernel', 'bias'),
    'batch_normalization': ('gamma', 'beta', 'moving_mean', 'moving_variance'),
    'layer_normalization': ('gamma', 'beta'),
    'normalization': ('mean', 'variance', 'count'),
    'layer_scale': ('gamma',),
}


def file_format(path: str) -> str:
  """'torch', 'safetensors', 'keras' or 'zoo' from the extension; a one-line error otherwise."""
  if not os.path.isfile(path):
    raise ConversionError(f'{path}: no such file')
  ext = os.path.splitext(path)[1].lower()
  if ext not in FORMATS:
    raise ConversionError(f'{path}: unknown weight format {ext!r}; expected one of '
                          f'{", ".join(sorted(FORMATS))} (torch state dict, timm safetensors, '
                          'Keras h5, or zoo.save_pretrained\'s msgpack)')
  return FORMATS[ext]


def read_torch(path: str) -> dict[str, np.ndarray]:
  import torch  # pylint: disable=import-outside-toplevel

  try:
    state = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # noqa: BLE001 (torch raises many types for a bad file)
    raise ConversionError(f'{path}: not a PyTorch state dict ({type(e).__name__}: '
                          f'{str(e).splitlines()[0][:200]})') from None
  for key in ('state_dict', 'model'):  # a training checkpoint wrapping the state dict
    if isinstance(state, dict) and isinstance(state.get(key), dict):
      state = state[key]
  if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
    raise ConversionError(f'{path}: holds no state dict of tensors; save the model with '
                          'torch.save(model.state_dict(), path)')
  return {k.removeprefix('module.'): v.detach().float().numpy() for k, v in state.items()}


def read_safetensors(path: str) -> dict[str, np.ndarray]:
  from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel

  return {k: np.asarray(v, np.float32) for k, v in load_file(path).items()}


def read_keras(path: str) -> dict[str, np.ndarray]:
  """Both Keras formats, keyed '<layer name>/<weight name>'.

  Legacy (Keras 2, and Keras 3's `model.save('x.h5')`): the layer names are listed in the
  'layer_names' attribute (at the root, or under 'model_weights' for a whole model), each layer's
  group lists 'weight_names' such as 'conv1_conv/kernel:0'.
  Keras 3 `.weights.h5`: 'layers/<class name>[_n]/vars/<index>' (nested models' layers under
  their 'layers' group), the layer's own name in the
  `name` attribute of its 'vars' group; the variable names come from `KERAS_VARIABLES`.
  """
  import h5py  # pylint: disable=import-outside-toplevel

  try:
    f = h5py.File(path, 'r')
  except OSError as e:
    raise ConversionError(f'{path}: not an HDF5 file ({e})') from None
  with f:
    root = f.get('model_weights', f)
    if 'layer_names' in root.attrs:
      return _read_keras_legacy(root)
    if 'layers' in f:
      return _read_keras3(f['layers'], path)
  raise ConversionError(f'{path}: an HDF5 file but not Keras weights (no layer_names or '
                        'layers group)')


def _text(value: Any) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


def _read_keras_legacy(root: Any) -> dict[str, np.ndarray]:
  tensors = {}
  for layer in map(_text, root.attrs['layer_names']):
    group = root[layer]
    for weight in map(_text, group.attrs.get('weight_names', [])):
      name = weight.split('/')[-1].split(':')[0]  # 'conv1_conv/kernel:0' -> 'kernel'
      tensors[f'{layer}/{name}'] = np.asarray(group[weight], np.float32)
  return tensors


def _read_keras3(layers: Any, path: str) -> dict[str, np.ndarray]:
  tensors = {}
  for group_name, group in layers.items():
    if 'layers' in group:  # a nested model (ConvNeXt's Sequential downsampling blocks)
      tensors.update(_read_keras3(group['layers'], path))
    variables = group.get('vars')
    if variables is None or not len(variables):
      continue
    if 'name' not in variables.attrs:
      raise ConversionError(f'{path}: written by a Keras 3 older than the one that records layer '
                            f'names; re-save it with a current keras (model.save_weights)')
    layer = _text(variables.attrs['name'])
    kind = re.sub(r'_\d+$', '', group_name)
    names = KERAS_VARIABLES.get(kind)
    if names is None or len(variables) > len(names):
      raise ConversionError(f'{path}: layer {layer!r} ({kind}) has {len(variables)} variables '
                            f'whose names zoo does not know; save the model in the legacy '
                            f'format instead (model.save("x.h5"))')
    for index in range(len(variables)):
      tensors[f'{layer}/{names[index]}'] = np.asarray(variables[str(index)], np.float32)
  return tensors


READERS = {'torch': read_torch, 'safetensors': read_safetensors, 'keras': read_keras}


def read_tensors(path: str) -> tuple[str, dict[str, np.ndarray]]:
  """(format, tensors) of a torch, safetensors or Keras weight file."""
  fmt = file_format(path)
  if fmt == 'zoo':
    raise ConversionError(f'{path}: a zoo file; read it with zoo.load_pretrained')
  return fmt, READERS[fmt](path)
