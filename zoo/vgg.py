"""VGG 11/13/16/19 (Simonyan & Zisserman, 2015), plain and with BatchNorm, as torchvision."""

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.typing import Dtype

from zoo.classifier_layers import ConvBN, classifier_head
from zoo.features import sow_stage
from zoo.registry import register_model


def _bin_matrix(size: int, bins: int) -> np.ndarray:
  """(bins, size) averaging matrix; row i spans [floor(i·size/bins), ceil((i+1)·size/bins))."""
  m = np.zeros((bins, size), np.float32)
  for i in range(bins):
    lo, hi = i * size // bins, -(-(i + 1) * size // bins)
    m[i, lo:hi] = 1 / (hi - lo)
  return m


def adaptive_avg_pool(x: jax.Array, output_size: tuple[int, int]) -> jax.Array:
  """Average-pools NHWC `x` to `output_size`, with the bins of torch's AdaptiveAvgPool2d.

  A larger map is averaged over (possibly overlapping) bins; a smaller one is repeated,
  e.g. a 1×1 map becomes 7×7 copies of its one pixel.
  """
  h, w = x.shape[1:3]
  if (h, w) == tuple(output_size):
    return x
  rows = jnp.asarray(_bin_matrix(h, output_size[0]), x.dtype)
  cols = jnp.asarray(_bin_matrix(w, output_size[1]), x.dtype)
  return jnp.einsum('ph,bhwc,qw->bpqc', rows, x, cols)


class VGG(nn.Module):
  """VGG: stages of 3×3 convs (-BatchNorm)-ReLU, each closed by a 2×2 max-pool.

  Stage i has `stage_sizes[i]` convs of `widths[i]` channels; inputs must be at least
  32×32. The last map is then average-pooled by `adaptive_avg_pool` to `pool_size`
  (7×7 as torchvision: a 224×224 input gives 7×7 already; the 1×1 map of a 32×32 CIFAR
  image is repeated to 7×7), flattened and fed to two Dense(`classifier_width`)-ReLU-
  Dropout layers and the `head`. For CIFAR, `pool_size=(1, 1), classifier_width=512`
  avoids the 25088-wide input of the first Dense layer. `classifier_width=0` has no Dense
  layers but the `head`: the last map is averaged instead (Keras' `include_top=False,
  pooling='avg'`).
  """
  stage_sizes: Sequence[int]
  widths: Sequence[int] = (64, 128, 256, 512, 512)
  batch_norm: bool = False
  pool_size: tuple[int, int] = (7, 7)
  classifier_width: int = 4096
  dropout_rate: float = 0.5
  num_classes: int = 1000
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    for i, (depth, width) in enumerate(zip(self.stage_sizes, self.widths), 1):
      for j in range(1, depth + 1):
        # torchvision keeps the conv bias even before BatchNorm; so do we, for equal counts.
        x = ConvBN(width, use_bias=True, batch_norm=self.batch_norm, dtype=self.dtype,
                   param_dtype=self.param_dtype, bn_axis_name=self.bn_axis_name,
                   name=f'stage{i}_conv{j}')(x, train=train)
      sow_stage(self, i, x)
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    if not self.classifier_width:  # Keras' VGG without its top, pooling='avg'
      return classifier_head(self, jnp.mean(x, axis=(1, 2)))
    x = adaptive_avg_pool(x, self.pool_size)
    x = x.reshape(x.shape[0], -1)
    for k in (1, 2):
      x = nn.Dense(self.classifier_width, dtype=self.dtype,
                   param_dtype=self.param_dtype, name=f'fc{k}')(x)
      x = nn.relu(x)
      x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return classifier_head(self, x)


@register_model(kind='classifier', input_shape=(224, 224, 3),
                description='VGG-11, torchvision layout')
def vgg11(**overrides) -> VGG:
  return VGG(**{'stage_sizes': (1, 1, 2, 2, 2), 'batch_norm': False, **overrides})


@register_model(kind='classifier', input_shape=(224, 224, 3),
                description='VGG-11 with BatchNorm, torchvision layout')
def vgg11_bn(**overrides) -> VGG:
  return VGG(**{'stage_sizes': (1, 1, 2, 2, 2), 'batch_norm': True, **overrides})


@register_model(kind='classifier', input_shape=(224, 224, 3),
                description='VGG-13, torchvision layout')
def vgg13(**overrides) -> VGG:
  return VGG(**{'stage_sizes': (2, 2, 2, 2, 2), 'batch_norm': False, **overrides})


@register_model(kind='classifier', input_shape=(224, 224, 3),
                description='VGG-13 with BatchNorm, torchvision layout')
def vgg13_bn(**overrides) -> VGG:
  return VGG(**{'stage_sizes': (2, 2, 2, 2, 2), 'batch_norm': True, **overrides})


@register_model(kind='classifier', input_shape=(224, 224, 3),
                description='VGG-16, torchvision layout')
def vgg16(**overrides) -> VGG:
  return VGG(**{'stage_sizes': (2, 2, 3, 3, 3), 'batch_norm': False, **overrides})


@register_model(kind='classifier', input_shape=(224, 224, 3),
                description='VGG-16 with BatchNorm, torchvision layout')
def vgg16_bn(**overrides) -> VGG:
  return VGG(**{'stage_sizes': (2, 2, 3, 3, 3), 'batch_norm': True, **overrides})


@register_model(kind='classifier', input_shape=(224, 224, 3),
                description='VGG-19, torchvision layout')
def vgg19(**overrides) -> VGG:
  return VGG(**{'stage_sizes': (2, 2, 4, 4, 4), 'batch_norm': False, **overrides})


@register_model(kind='classifier', input_shape=(224, 224, 3),
                description='VGG-19 with BatchNorm, torchvision layout')
def vgg19_bn(**overrides) -> VGG:
  return VGG(**{'stage_sizes': (2, 2, 4, 4, 4), 'batch_norm': True, **overrides})
