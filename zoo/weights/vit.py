"""torchvision and timm weights for zoo.vit's VisionTransformer.

Both sources fuse the query, key and value projections into one (3D, D) matrix, queries then
keys then values, each split into heads: the layout of zoo's `qkv` Dense, so every tensor maps
by name with `torch_layout`. The class token and position embeddings keep their shapes.

  - torchvision (`vit_b_16`): 'class_token', 'encoder.pos_embedding', 'conv_proj',
    'encoder.layers.encoder_layer_{i}.{ln_1, self_attention.in_proj_*, self_attention.out_proj,
    ln_2, mlp.0, mlp.3}', 'encoder.ln', 'heads.head'.
  - timm (`vit_*_patch16_224`): 'cls_token', 'pos_embed', 'patch_embed.proj',
    'blocks.{i}.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}', 'norm' (or 'fc_norm' for
    `global_pool='avg'` models), 'head'.
"""

import math
from typing import Mapping

import numpy as np

from zoo.weights import mapping
from zoo.weights.mapping import ConversionError, Path, Tensors, torch_param

SOURCES = ('torchvision', 'timm')

# The tensors that give the patch size, the number of tokens and the classes.
_KEYS = {
    'torchvision': ('conv_proj.weight', 'encoder.pos_embedding', 'heads.head.weight'),
    'timm': ('patch_embed.proj.weight', 'pos_embed', 'head.weight'),
}
_TORCHVISION = {'patch_embed': 'conv_proj', 'norm': 'encoder.ln', 'head': 'heads.head'}
_TORCHVISION_BLOCK = {'norm1': 'ln_1', 'attention/out': 'self_attention.out_proj',
                      'norm2': 'ln_2', 'fc1': 'mlp.0', 'fc2': 'mlp.3'}
_TIMM = {'patch_embed': 'patch_embed.proj', 'head': 'head'}
_TIMM_BLOCK = {'norm1': 'norm1', 'attention/qkv': 'attn.qkv', 'attention/out': 'attn.proj',
               'norm2': 'norm2', 'fc1': 'mlp.fc1', 'fc2': 'mlp.fc2'}


def _check_source(source: str) -> None:
  if source not in SOURCES:
    raise ConversionError(f'ViT weights come from {" or ".join(SOURCES)}, not {source!r}')


def overrides(model_name: str, source: str, tensors: Mapping[str, np.ndarray]) -> dict:
  """The VisionTransformer fields the weights need: patch and image size, classes, pooling."""
  del model_name  # every ViT reads its options the same way
  _check_source(source)
  patch_key, pos_key, head_key = _KEYS[source]
  reader = Tensors(tensors, source)
  patch_size = reader.take(patch_key).shape[-1]
  class_token = 'class_token' in tensors if source == 'torchvision' else 'cls_token' in tensors
  patches = reader.take(pos_key).shape[1] - class_token
  grid = math.isqrt(patches)
  if grid * grid != patches:
    raise ConversionError(f'{source} weights: {pos_key!r} has {patches} patch positions, not a '
                          'square grid; zoo ViTs take square images')
  fields = dict(patch_size=patch_size, image_size=grid * patch_size, class_token=class_token,
                num_classes=tensors[head_key].shape[0] if head_key in tensors else 0,
                layer_norm_epsilon=1e-6)
  if source == 'timm' and 'fc_norm.weight' in tensors:
    fields['global_pool'] = 'avg'
  return fields


def _block(path: Path) -> tuple[int, str]:
  """The 0-based index of a zoo 'block{i}' and the path of a module inside it."""
  return int(path[0].removeprefix('block')) - 1, '/'.join(path[1:-1])


def _torchvision(collection: str, path: Path) -> str:
  del collection  # ViT has parameters only
  if path == ('cls',):
    return 'class_token'
  if path == ('pos_embedding',):
    return 'encoder.pos_embedding'
  leaf = path[-1]
  if path[0].startswith('block'):
    index, module = _block(path)
    prefix = f'encoder.layers.encoder_layer_{index}'
    if module == 'attention/qkv':  # torch's MultiheadAttention names its fused input projection
      return f'{prefix}.self_attention.in_proj_{"weight" if leaf == "kernel" else "bias"}'
    return torch_param(f'{prefix}.{_TORCHVISION_BLOCK[module]}', leaf)
  return torch_param(_TORCHVISION['/'.join(path[:-1])], leaf)


def _final_norm(leaf: str):
  """timm's final LayerNorm: 'fc_norm' after average pooling, else 'norm'."""
  return lambda t: t.take(torch_param('fc_norm' if 'fc_norm.weight' in t else 'norm', leaf))


def _timm(collection: str, path: Path):
  del collection
  if path == ('cls',):
    return 'cls_token'
  if path == ('pos_embedding',):
    return 'pos_embed'
  leaf = path[-1]
  if path[0].startswith('block'):
    index, module = _block(path)
    return torch_param(f'blocks.{index}.{_TIMM_BLOCK[module]}', leaf)
  if path[0] == 'norm':
    return _final_norm(leaf)
  return torch_param(_TIMM['/'.join(path[:-1])], leaf)


def rule(model_name: str, source: str) -> mapping.Rule:
  """Where each VisionTransformer variable comes from in `source`'s state dict."""
  del model_name
  _check_source(source)
  return _torchvision if source == 'torchvision' else _timm
