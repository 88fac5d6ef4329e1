"""Masked 2-D convolution for autoregressive image models.

van den Oord et al. 2016, "Pixel Recurrent Neural Networks", section 3.4: the kernel is masked so
that the output at a pixel sees only the pixels before it in raster order (rows top to bottom,
each row left to right) and, at the pixel itself, only the colour channels before it (R, then G,
then B). Channels are split into `num_groups` contiguous, equal groups (one per colour channel of
the image); output group g may see input groups < g of the same pixel (mask 'A', the first layer,
which must not see the value it predicts) or <= g (mask 'B', every later layer, whose inputs at
the pixel already exclude that value).
"""

from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.typing import Dtype, Initializer


def causal_mask(kernel_size: tuple[int, int], in_features: int, out_features: int,
                mask_type: Literal['A', 'B'], num_groups: int = 1) -> np.ndarray:
  """The 0/1 mask of shape `kernel_size + (in_features, out_features)`."""
  if mask_type not in ('A', 'B'):
    raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
  if in_features % num_groups or out_features % num_groups:
    raise ValueError(f'input and output channels ({in_features}, {out_features}) must be '
                     f'multiples of num_groups={num_groups}')
  kh, kw = kernel_size
  if kh % 2 == 0 or kw % 2 == 0:
    raise ValueError(f'kernel_size must be odd to have a centre pixel, got {kernel_size}')
  ci, cj = kh // 2, kw // 2
  mask = np.zeros((kh, kw, in_features, out_features), np.float32)
  mask[:ci] = 1  # rows above
  mask[ci, :cj] = 1  # left of the centre on its row
  g_in = np.arange(in_features) * num_groups // in_features
  g_out = np.arange(out_features) * num_groups // out_features
  visible = g_in[:, None] < g_out[None, :] if mask_type == 'A' else (
      g_in[:, None] <= g_out[None, :])
  mask[ci, cj] = visible
  return mask


class MaskedConv(nn.Module):
  """A 'SAME'-padded convolution whose kernel is multiplied by `causal_mask` (a constant).

  Attributes:
    features: number of output channels.
    kernel_size: (height, width), both odd.
    mask_type: 'A' excludes the current pixel's own group, 'B' includes it.
    num_groups: channel groups in colour order (3 for RGB, 1 for grayscale); input and output
      channels must be multiples of it.
  """
  features: int
  kernel_size: tuple[int, int]
  mask_type: Literal['A', 'B']
  num_groups: int = 1
  use_bias: bool = True
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32
  kernel_init: Initializer = nn.initializers.lecun_normal()
  bias_init: Initializer = nn.initializers.zeros_init()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    mask = causal_mask(tuple(self.kernel_size), x.shape[-1], self.features, self.mask_type,
                       self.num_groups)
    return nn.Conv(self.features, tuple(self.kernel_size), padding='SAME',
                   use_bias=self.use_bias, mask=jnp.asarray(mask, self.param_dtype),
                   dtype=self.dtype, param_dtype=self.param_dtype,
                   kernel_init=self.kernel_init, bias_init=self.bias_init, name='conv')(x)
