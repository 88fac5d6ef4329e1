"""Upsampling decoders, their strided-convolution mirror, and a small super-resolution network.

Both decoders share one interface, so the VAE, the DCGAN generator and `SuperResolution` take
either by name (`DECODERS`):

- `TransposeConvDecoder`: stride-2 transposed convolutions (Radford et al. 2015, "Unsupervised
  Representation Learning with Deep Convolutional GANs").
- `ResizeConvDecoder`: resize x2 (nearest or bilinear) then a stride-1 convolution, which avoids
  the checkerboard artifacts of uneven kernel overlap (Odena et al. 2016, "Deconvolution and
  Checkerboard Artifacts", distill.pub).

A decoder has `len(features) + 1` stages, each doubling height and width: stage i outputs
`features[i]` channels followed by BatchNorm (optional) and the activation; the last stage
outputs `out_channels` with neither, so the caller applies tanh/sigmoid or reads logits. A
(B, h, w, C) input gives (B, h * 2**k, w * 2**k, out_channels) with k = len(features) + 1.
Making the last upsampling the output layer, rather than adding a full-resolution convolution
after the stages, keeps the DCGAN generator exactly as published.
"""

from typing import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.typing import Dtype, Initializer

from zoo.registry import register_model

# PyTorch's BatchNorm defaults (momentum 0.1 there is 0.9 here), as in the DCGAN reference code
# and flax's ImageNet example; flax's own default of 0.99 adapts too slowly for short GAN runs.
_BN_MOMENTUM = 0.9
_BN_EPSILON = 1e-5


class _Decoder(nn.Module):
  """Shared stage loop of the decoders; subclasses define one x2 upsampling layer.

  Attributes:
    features: channels of the hidden stages, from the input side.
    out_channels: channels of the output (no normalization, no activation).
    kernel_size: kernel of every upsampling layer.
    use_batchnorm: BatchNorm after every hidden stage (never after the output stage).
    activation: applied after every hidden stage.
    kernel_init: initializer of the convolution kernels.
    scale_init: initializer of the BatchNorm scales.
    bn_axis_name: passed to BatchNorm (for `pmap`); None under `jit`, whose batch statistics
      are already global.
  """
  features: Sequence[int]
  out_channels: int
  kernel_size: tuple[int, int] = (4, 4)
  use_batchnorm: bool = True
  activation: Callable[[jax.Array], jax.Array] = nn.relu
  kernel_init: Initializer = nn.initializers.lecun_normal()
  scale_init: Initializer = nn.initializers.ones
  bn_axis_name: str | None = None
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  def _upsample(self, x: jax.Array, features: int, use_bias: bool, name: str) -> jax.Array:
    """One layer doubling height and width and mapping to `features` channels."""
    raise NotImplementedError

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    for i, f in enumerate(self.features):
      # A bias before BatchNorm is cancelled by its mean subtraction.
      x = self._upsample(x, f, use_bias=not self.use_batchnorm, name=f'stage{i}')
      if self.use_batchnorm:
        x = batch_norm(self, train, name=f'bn{i}')(x)
      x = self.activation(x)
    return self._upsample(x, self.out_channels, use_bias=True, name='output')


def batch_norm(module: nn.Module, train: bool, name: str) -> nn.BatchNorm:
  """The BatchNorm used by the decoders, the encoder and the DCGAN, from `module`'s fields."""
  return nn.BatchNorm(use_running_average=not train, momentum=_BN_MOMENTUM, epsilon=_BN_EPSILON,
                      axis_name=module.bn_axis_name, scale_init=module.scale_init,
                      dtype=module.dtype, param_dtype=module.param_dtype, name=name)


class TransposeConvDecoder(_Decoder):
  """Stride-2 'SAME' transposed convolutions; the default 4x4 kernel is a multiple of the stride,
  so every output pixel receives the same number of kernel taps (Odena et al. 2016)."""

  def _upsample(self, x, features, use_bias, name):
    return nn.ConvTranspose(features, self.kernel_size, strides=(2, 2), padding='SAME',
                            use_bias=use_bias, kernel_init=self.kernel_init, dtype=self.dtype,
                            param_dtype=self.param_dtype, name=name)(x)


class ResizeConvDecoder(_Decoder):
  """`jax.image.resize` x2 then a stride-1 'SAME' convolution (Odena et al. 2016).

  Attributes:
    resize_method: 'nearest' (Odena et al.'s choice) or 'bilinear'.
  """
  kernel_size: tuple[int, int] = (3, 3)
  resize_method: str = 'nearest'

  def _upsample(self, x, features, use_bias, name):
    b, h, w, c = x.shape
    x = jax.image.resize(x, (b, 2 * h, 2 * w, c), method=self.resize_method)
    return nn.Conv(features, self.kernel_size, padding='SAME', use_bias=use_bias,
                   kernel_init=self.kernel_init, dtype=self.dtype, param_dtype=self.param_dtype,
                   name=name)(x)


DECODERS: dict[str, type[_Decoder]] = {
    'transpose': TransposeConvDecoder,
    'resize': ResizeConvDecoder,
}


def get_decoder(name: str) -> type[_Decoder]:
  """The decoder class called `name` in `DECODERS`."""
  if name not in DECODERS:
    raise ValueError(f'unknown decoder {name!r}; expected one of {sorted(DECODERS)}')
  return DECODERS[name]


class ConvEncoder(nn.Module):
  """Stride-2 'SAME' convolutions, each halving height and width: the decoders' mirror image,
  shared by the VAE encoder and the DCGAN discriminator.

  Stage i outputs `features[i]` channels, then BatchNorm (if `use_batchnorm`, never on the first
  stage: it sees raw pixels, where Radford et al. 2015 found BatchNorm made training oscillate)
  and the activation. A (B, H, W, C) input gives (B, H / 2**k, W / 2**k, features[-1]) with
  k = len(features).
  """
  features: Sequence[int]
  kernel_size: tuple[int, int] = (4, 4)
  use_batchnorm: bool = False
  activation: Callable[[jax.Array], jax.Array] = nn.relu
  kernel_init: Initializer = nn.initializers.lecun_normal()
  scale_init: Initializer = nn.initializers.ones
  bn_axis_name: str | None = None
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    for i, f in enumerate(self.features):
      norm = self.use_batchnorm and i > 0
      x = nn.Conv(f, self.kernel_size, strides=(2, 2), padding='SAME', use_bias=not norm,
                  kernel_init=self.kernel_init, dtype=self.dtype, param_dtype=self.param_dtype,
                  name=f'stage{i}')(x)
      if norm:
        x = batch_norm(self, train, name=f'bn{i}')(x)
      x = self.activation(x)
    return x


class SuperResolution(nn.Module):
  """A small super-resolution network: convolutions at the input resolution, then a decoder
  predicting the residual over a bilinear upsampling of the input (the global skip of Kim et al.
  2016, "VDSR"). No BatchNorm, as in Lim et al. 2017 ("EDSR"), so `train` changes nothing.

  Input (B, h, w, C) at any scale; output (B, scale * h, scale * w, C) on the same scale.

  Attributes:
    scale: upsampling factor, a power of two >= 2.
    features: channels of every convolution.
    num_convs: 3x3 convolutions (with ReLU) at the input resolution.
    decoder: 'transpose' or 'resize' (see `DECODERS`).
  """
  scale: int = 2
  features: int = 64
  num_convs: int = 3
  decoder: str = 'resize'
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    num_stages = self.scale.bit_length() - 1
    if self.scale < 2 or self.scale != 1 << num_stages:
      raise ValueError(f'scale must be a power of two >= 2, got {self.scale}')
    b, h, w, c = x.shape
    y = x
    for i in range(self.num_convs):
      y = nn.relu(nn.Conv(self.features, (3, 3), dtype=self.dtype, param_dtype=self.param_dtype,
                          name=f'conv{i}')(y))
    residual = get_decoder(self.decoder)(
        features=(self.features,) * (num_stages - 1), out_channels=c, use_batchnorm=False,
        dtype=self.dtype, param_dtype=self.param_dtype, name='decoder')(y, train=train)
    base = jax.image.resize(x, (b, self.scale * h, self.scale * w, c), method='bilinear')
    return base.astype(residual.dtype) + residual


@register_model(kind='upsampler', input_shape=(32, 32, 3),
                description='x2 super-resolution (scale=4 for x4), transposed-convolution decoder')
def sr_transpose(**overrides) -> SuperResolution:
  return SuperResolution(**{'decoder': 'transpose', **overrides})


@register_model(kind='upsampler', input_shape=(32, 32, 3),
                description='x2 super-resolution (scale=4 for x4), resize-convolution decoder')
def sr_resize(**overrides) -> SuperResolution:
  return SuperResolution(**{'decoder': 'resize', **overrides})
