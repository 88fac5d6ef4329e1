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

# zoo module -> source module; 'block' is the prefix of the i-th (0-based) encoder block.
_NAMES = {
    'torchvision': {
        'cls': 'class_token', 'pos_embedding': 'encoder.pos_embedding',
        'patch_embed': 'conv_proj', 'norm': 'encoder.ln', 'head': 'heads.head',
        'block': 'encoder.layers.encoder_layer_{}', 'norm1': 'ln_1',
        'attention/out': 'self_attention.out_proj', 'norm2': 'ln_2', 'fc1': 'mlp.0',
        'fc2': 'mlp.3'},
    'timm': {
        'cls': 'cls_token', 'pos_embedding': 'pos_embed', 'patch_embed': 'patch_embed.proj',
        'head': 'head', 'block': 'blocks.{}', 'norm1': 'norm1', 'attention/qkv': 'attn.qkv',
        'attention/out': 'attn.proj', 'norm2': 'norm2', 'fc1': 'mlp.fc1', 'fc2': 'mlp.fc2'},
}


def _check_source(source: str) -> None:
  if source not in SOURCES:
    raise ConversionError(f'ViT weights come from {" or ".join(SOURCES)}, not {source!r}')


def overrides(model_name: str, source: str, tensors: Mapping[str, np.ndarray]) -> dict:
  """The VisionTransformer fields the weights need: patch and image size, classes, pooling."""
  del model_name  # every ViT reads its options the same way
  _check_source(source)
  names = _NAMES[source]
  pos_key, head_key = names['pos_embedding'], f'{names["head"]}.weight'
  reader = Tensors(tensors, source)
  patch_size = reader.take(f'{names["patch_embed"]}.weight').shape[-1]
  class_token = names['cls'] in tensors
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


def _timm_final_norm(leaf: str):
  """timm's final LayerNorm: 'fc_norm' after average pooling, else 'norm'."""
  return lambda t: t.take(torch_param('fc_norm' if 'fc_norm.weight' in t else 'norm', leaf))


def rule(model_name: str, source: str) -> mapping.Rule:
  """Where each VisionTransformer variable comes from in `source`'s state dict."""
  del model_name  # every ViT maps the same way
  _check_source(source)
  names = _NAMES[source]

  def where(collection: str, path: Path):
    del collection  # ViT has parameters only
    if len(path) == 1:  # the class token and the position embeddings
      return names[path[0]]
    leaf = path[-1]
    if path[0].startswith('block'):
      block = names['block'].format(int(path[0].removeprefix('block')) - 1)
      module = '/'.join(path[1:-1])
      if source == 'torchvision' and module == 'attention/qkv':
        # torch's MultiheadAttention names its fused input projection so.
        return f'{block}.self_attention.in_proj_{"weight" if leaf == "kernel" else "bias"}'
      return torch_param(f'{block}.{names[module]}', leaf)
    if source == 'timm' and path[0] == 'norm':
      return _timm_final_norm(leaf)
    return torch_param(names['/'.join(path[:-1])], leaf)

  return where

