"""U-Net (Ronneberger et al. 2015, "U-Net: Convolutional Networks for Biomedical Image
Segmentation"): an encoder-decoder with skip connections, for per-pixel classification.

The upsampling layers are those of `zoo.decoders` (`decoder='transpose'`: stride-2 transposed
convolutions, as in the paper; `decoder='resize'`: resize then convolve, Odena et al. 2016), so
the two can be compared on segmentation as on super-resolution.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.typing import Dtype

from zoo.classifier_layers import ConvBN
from zoo.decoders import get_decoder
from zoo.registry import register_model


class UNet(nn.Module):
  """Input (B, H, W, C) with H and W multiples of 2**depth; float32 logits (B, H, W, num_classes).

  Level i (0..depth-1) of the encoder is two 3x3 Conv-BatchNorm-ReLU units of `width * 2**i`
  channels, then a 2x2 max-pool; the bottom level has `width * 2**depth` channels. Each decoder
  level upsamples x2 with `decoder` to the channels of the encoder level it meets, concatenates
  that level's output (the skip connection) and applies two units; a 1x1 convolution gives the
  logits. 'SAME' padding, so the output has the input's size (the paper's valid convolutions
  crop instead).

  Attributes:
    num_classes: classes per pixel (background included).
    width: channels of the first level.
    depth: number of 2x downsamplings.
    decoder: 'transpose' or 'resize' (see `zoo.decoders.DECODERS`).
    bn_axis_name: passed to BatchNorm (for `pmap`); None under `jit`.
  """
  num_classes: int
  width: int = 32
  depth: int = 3
  decoder: str = 'transpose'
  bn_axis_name: str | None = None
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    factor = 2 ** self.depth
    if x.shape[1] % factor or x.shape[2] % factor:
      raise ValueError(f'UNet with depth={self.depth} needs a height and width that are '
                       f'multiples of {factor}; got {x.shape[1]}x{x.shape[2]}')
    unit = functools.partial(ConvBN, dtype=self.dtype, param_dtype=self.param_dtype,
                             bn_axis_name=self.bn_axis_name)

    def block(x, features, name):
      x = unit(features, name=f'{name}_conv1')(x, train=train)
      return unit(features, name=f'{name}_conv2')(x, train=train)

    skips = []
    for level in range(self.depth):
      x = block(x, self.width * 2 ** level, f'down{level}')
      skips.append(x)
      x = nn.max_pool(x, (2, 2), strides=(2, 2))
    x = block(x, self.width * factor, 'bottom')
    upsample = get_decoder(self.decoder)
    for level in reversed(range(self.depth)):
      features = self.width * 2 ** level
      # A decoder without hidden stages is one x2 upsampling layer (with a bias, no activation).
      x = upsample(features=(), out_channels=features, batch_norm=False, dtype=self.dtype,
                   param_dtype=self.param_dtype, name=f'up{level}')(x, train=train)
      x = block(jnp.concatenate([skips[level], x], axis=-1), features, f'up{level}')
    x = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, param_dtype=self.param_dtype,
                name='logits')(x)
    return x.astype(jnp.float32)


@register_model(kind='segmenter', input_shape=(128, 128, 3),
                description="U-Net; decoder='transpose' (default) or 'resize'; per-pixel logits")
def unet(**overrides) -> UNet:
  return UNet(**{'num_classes': 21, **overrides})
