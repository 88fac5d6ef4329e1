"""ConvNeXt (Liu et al. 2022, "A ConvNet for the 2020s"): tiny, small, base, large.

A 4×4/4 patchify stem, four stages of inverted-bottleneck blocks (7×7 depthwise conv,
LayerNorm, 4× MLP with GELU, layer scale, stochastic depth), a LayerNorm + 2×2/2 conv between
stages, global average pooling, LayerNorm and the `head`.

The sources compute the same function and load into the same model (zoo.weights.convnext):
torchvision, timm and Keras all use LayerNorm epsilon 1e-6 and a layer scale initialized to
1e-6; they differ only in names and layouts (torchvision's layer scale is (C, 1, 1), timm's
and Keras' `gamma` (C,)). Keras' ConvNeXt models start with a fixed Normalization layer of the
ImageNet mean and std on 0-255 inputs; zoo's model takes inputs already normalized (the
torchvision convention, (x / 255 - mean) / std, the same numbers), so that layer is part of
the input pipeline here, not of the model.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoo.classifier_layers import classifier_head, drop_path
from zoo.features import sow_stage
from zoo.registry import register_model

# timm's and the paper's initialization of convs and linear layers.
kernel_init = nn.initializers.truncated_normal(0.02)


class ConvNeXtBlock(nn.Module):
  """x + drop_path(layer_scale · fc2(GELU(fc1(LN(dwconv7×7(x))))))."""
  layer_scale_init: float | None = 1e-6
  drop_path_rate: float = 0.0
  layer_norm_epsilon: float = 1e-6
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:  # positional `train`: nn.remat
    width = x.shape[-1]
    common = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    y = nn.Conv(width, (7, 7), padding=3, feature_group_count=width, kernel_init=kernel_init,
                name='dwconv', **common)(x)
    y = nn.LayerNorm(self.layer_norm_epsilon, name='norm', **common)(y)
    y = nn.gelu(nn.Dense(4 * width, kernel_init=kernel_init, name='fc1', **common)(y),
                approximate=False)
    y = nn.Dense(width, kernel_init=kernel_init, name='fc2', **common)(y)
    if self.layer_scale_init is not None:
      scale = self.param('layer_scale', nn.initializers.constant(self.layer_scale_init),
                         (width,), self.param_dtype)
      y = y * scale.astype(y.dtype)
    return x + drop_path(y, self.drop_path_rate, train=train)


class ConvNeXt(nn.Module):
  """ConvNeXt: stem, stages of `ConvNeXtBlock`s, pooling, LayerNorm, the `head`.

  Stage i has `stage_sizes[i]` blocks of `widths[i]` channels. `layer_scale_init=None` drops
  the layer scale. Stochastic depth grows linearly from 0 to `drop_path_rate` over all blocks;
  `dropout_rate` is applied before the head (timm's `drop_rate`); both use the 'dropout' stream.
  Both default to 0, as timm; torchvision trained with drop_path_rate 0.1 (tiny), 0.4 (small),
  0.5 (base, large), the values to use when fine-tuning its weights.

  Features: 'stage1'…'stage4', each stage's output (strides 4, 8, 16, 32); 'pooled', the
  normalized global average, which is the output when `num_classes=0`.
  """
  stage_sizes: Sequence[int] = (3, 3, 9, 3)
  widths: Sequence[int] = (96, 192, 384, 768)
  layer_scale_init: float | None = 1e-6
  drop_path_rate: float = 0.0
  dropout_rate: float = 0.0
  layer_norm_epsilon: float = 1e-6
  num_classes: int = 1000
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  remat: bool = False  # recompute each block's activations in the backward pass: less memory

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    common = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    norm = lambda name: nn.LayerNorm(self.layer_norm_epsilon, name=name, **common)
    conv = lambda width, size, name: nn.Conv(width, (size, size), strides=size,
                                             padding='VALID', kernel_init=kernel_init,
                                             name=name, **common)
    x = norm('stem_norm')(conv(self.widths[0], 4, 'stem_conv')(x))
    block_cls = nn.remat(ConvNeXtBlock, static_argnums=(2,)) if self.remat else ConvNeXtBlock
    total, done = sum(self.stage_sizes), 0
    for i, (depth, width) in enumerate(zip(self.stage_sizes, self.widths), 1):
      if i > 1:
        x = conv(width, 2, f'stage{i}_downsample_conv')(norm(f'stage{i}_downsample_norm')(x))
      for j in range(1, depth + 1):
        x = block_cls(self.layer_scale_init,
                      drop_path_rate=self.drop_path_rate * done / max(1, total - 1),
                      layer_norm_epsilon=self.layer_norm_epsilon,
                      name=f'stage{i}_block{j}', **common)(x, train)
        done += 1
      sow_stage(self, i, x)
    x = norm('head_norm')(jnp.mean(x, axis=(1, 2)))
    x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
    return classifier_head(self, x)


@register_model(kind='classifier', input_shape=(224, 224, 3),
                description='ConvNeXt-T (Liu et al. 2022)')
def convnext_tiny(**overrides) -> ConvNeXt:
  return ConvNeXt(**{'stage_sizes': (3, 3, 9, 3), 'widths': (96, 192, 384, 768),
                     **overrides})


@register_model(kind='classifier', input_shape=(224, 224, 3),
                description='ConvNeXt-S (Liu et al. 2022)')
def convnext_small(**overrides) -> ConvNeXt:
  return ConvNeXt(**{'stage_sizes': (3, 3, 27, 3), 'widths': (96, 192, 384, 768),
                     **overrides})


@register_model(kind='classifier', input_shape=(224, 224, 3),
                description='ConvNeXt-B (Liu et al. 2022)')
def convnext_base(**overrides) -> ConvNeXt:
  return ConvNeXt(**{'stage_sizes': (3, 3, 27, 3), 'widths': (128, 256, 512, 1024),
                     **overrides})


@register_model(kind='classifier', input_shape=(224, 224, 3),
                description='ConvNeXt-L (Liu et al. 2022)')
def convnext_large(**overrides) -> ConvNeXt:
  return ConvNeXt(**{'stage_sizes': (3, 3, 27, 3), 'widths': (192, 384, 768, 1536),
                     **overrides})
