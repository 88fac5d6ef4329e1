"""DCGAN (Radford et al. 2015, "Unsupervised Representation Learning with Deep Convolutional
Generative Adversarial Networks").

Images are NHWC in [-1, 1] (the generator ends in tanh); scale real data to match.

Geometry: both networks have `num_stages(image_size)` stride-2 stages between the image and an
s x s map: the image size is halved while it is even and above 4, at least twice. So 64 and 32
reach 4 x 4 (4 and 3 stages, as in the paper), 16 reaches 4 x 4, 8 reaches 2 x 2, and 28, which
cannot reach 4, stops at 7 x 7 (28 -> 14 -> 7). Channels double at every stage away from the
image: `width` next to the image, `width * 2**(stages - 1)` at the s x s map (512 for 64 x 64
with width 64, as in the PyTorch reference; the paper's 1024 is width 128).

Initialization as in the reference code: every kernel from N(0, 0.02), BatchNorm scales from
N(1, 0.02), biases 0. Strided kernels are 4 x 4 (the PyTorch reference; the paper's code used
5 x 5): a multiple of the stride, so transposed convolutions overlap evenly (Odena et al. 2016).
With `decoder='resize'` the generator upsamples by resize-convolution (3 x 3) instead.

The trainer builds the pair with the same geometry, e.g.
`create_model('dcgan_generator', image_size=28, channels=1)` and
`create_model('dcgan_discriminator', image_size=28)`.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.typing import Dtype, Initializer

from zoo.decoders import ConvEncoder, get_decoder, module_batch_norm
from zoo.registry import register_model


def _bn_scale_init(key: jax.Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32):
  """N(1, 0.02), the reference code's BatchNorm scale initialization."""
  return 1 + 0.02 * jax.random.normal(key, shape, dtype)


def num_stages(image_size: int) -> int:
  """Stride-2 stages between an image of side `image_size` and the smallest feature map."""
  n, size = 0, image_size
  while size % 2 == 0 and size > 4:
    n, size = n + 1, size // 2
  n = max(n, 2)
  if image_size % 2**n:
    raise ValueError(f'image_size must be divisible by 4, got {image_size}')
  return n


class _DCGANNet(nn.Module):
  """What the generator and the discriminator share: the reference code's initialization
  (kernels N(0, 0.02), BatchNorm scales N(1, 0.02)), BatchNorm's `pmap` axis, the dtypes."""
  kernel_init: Initializer = nn.initializers.normal(0.02)
  scale_init: Initializer = _bn_scale_init
  bn_axis_name: str | None = None
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32


class Generator(_DCGANNet):
  """Noise (B, latent_dim) -> dense projection -> reshape to s x s -> BatchNorm, ReLU ->
  stride-2 upsampling stages with BatchNorm and ReLU -> tanh image (B, size, size, channels).

  Attributes:
    image_size: side of the square images (see the module docstring).
    channels: image channels.
    width: channels of the last hidden stage; they double towards the projection.
    latent_dim: dimension of the noise vector (100 in the paper).
    decoder: 'transpose' (the paper) or 'resize' (see `zoo.decoders.DECODERS`).
  """
  image_size: int = 64
  channels: int = 3
  width: int = 64
  latent_dim: int = 100
  decoder: str = 'transpose'

  @nn.compact
  def __call__(self, z: jax.Array, train: bool) -> jax.Array:
    if z.shape[1:] != (self.latent_dim,):
      raise ValueError(f'expected noise of shape (B, {self.latent_dim}), got {z.shape}')
    n = num_stages(self.image_size)
    size = self.image_size // 2**n
    widths = [self.width * 2**i for i in reversed(range(n))]
    x = nn.Dense(size * size * widths[0], use_bias=False, kernel_init=self.kernel_init,
                 dtype=self.dtype, param_dtype=self.param_dtype, name='project')(z)
    x = x.reshape(z.shape[0], size, size, widths[0])
    x = nn.relu(module_batch_norm(self, train, name='project_bn')(x))
    x = get_decoder(self.decoder)(
        features=widths[1:], out_channels=self.channels, batch_norm=True, activation=nn.relu,
        kernel_init=self.kernel_init, scale_init=self.scale_init, bn_axis_name=self.bn_axis_name,
        dtype=self.dtype, param_dtype=self.param_dtype, name='decoder')(x, train=train)
    return jnp.tanh(x).astype(jnp.float32)


class Discriminator(_DCGANNet):
  """Image (B, size, size, C) -> stride-2 convolutions with LeakyReLU(0.2), BatchNorm on every
  layer but the first -> one logit per image, (B,). Apply a sigmoid loss to the logit.

  Attributes:
    image_size: side of the square images (see the module docstring).
    width: channels of the first stage; they double at every stage.
  """
  image_size: int = 64
  width: int = 64

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    if x.shape[1:3] != (self.image_size, self.image_size):
      raise ValueError(f'expected images of side {self.image_size}, got shape {x.shape}')
    n = num_stages(self.image_size)
    x = ConvEncoder(
        features=[self.width * 2**i for i in range(n)], batch_norm=True,
        activation=functools.partial(nn.leaky_relu, negative_slope=0.2),
        kernel_init=self.kernel_init, scale_init=self.scale_init, bn_axis_name=self.bn_axis_name,
        dtype=self.dtype, param_dtype=self.param_dtype, name='encoder')(x, train=train)
    # A dense layer on the flattened s x s map: the paper's "flattened and fed into a single
    # sigmoid output" (equal to the PyTorch reference's s x s 'VALID' convolution).
    logit = nn.Dense(1, kernel_init=self.kernel_init, dtype=self.dtype,
                     param_dtype=self.param_dtype, name='logit')(x.reshape(x.shape[0], -1))
    return logit[:, 0].astype(jnp.float32)


@register_model(kind='generator', input_shape=(100,),
                description='DCGAN generator: noise (B, latent_dim) -> 64x64x3 images in [-1, 1]; '
                            'set image_size/channels to match the discriminator')
def dcgan_generator(**overrides) -> Generator:
  return Generator(**overrides)


@register_model(kind='discriminator', input_shape=(64, 64, 3),
                description='DCGAN discriminator: images in [-1, 1] -> one logit (B,)')
def dcgan_discriminator(**overrides) -> Discriminator:
  return Discriminator(**overrides)
