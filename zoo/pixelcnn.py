"""PixelCNN and gated PixelCNN, with their log-likelihood and an autoregressive sampler.

- van den Oord et al. 2016a, "Pixel Recurrent Neural Networks" (PixelCNN: a 7x7 mask-'A'
  convolution, residual blocks around a 3x3 mask-'B' convolution, 1x1 mask-'B' output layers).
- van den Oord et al. 2016b, "Conditional Image Generation with PixelCNN Decoders" (gated
  PixelCNN: vertical and horizontal stacks with tanh * sigmoid gates, no blind spot).

Input scale: the model takes `to_input(x_int, num_levels)`, the integer image in
[0, num_levels) divided by `num_levels - 1`, so floats in [0, 1]: binarized images stay {0, 1},
8-bit images become x / 255. Outputs: with `num_levels == 2` one Bernoulli logit per pixel and
channel, `(batch, H, W, C)`; otherwise a softmax over the levels, `(batch, H, W, C, num_levels)`.
Channel c of a pixel is predicted from every channel of earlier pixels (raster order) and
channels < c of the same pixel.
"""

import functools
from typing import Literal

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.typing import Dtype

from zoo.masked_conv import MaskedConv
from zoo.registry import register_model


def to_input(x_int: jnp.ndarray, num_levels: int) -> jnp.ndarray:
  """Integer image in [0, num_levels) -> the model's input scale, floats in [0, 1]."""
  return x_int.astype(jnp.float32) / (num_levels - 1)


def _gate(x: jnp.ndarray, num_groups: int) -> jnp.ndarray:
  """tanh(a) * sigmoid(b) over the halves of each colour group's channels.

  Pairing a and b within a group (rather than splitting all channels in two) keeps every output
  channel in the group of the channels it came from, which the colour masks rely on.
  """
  *lead, c = x.shape
  x = x.reshape(*lead, num_groups, 2, c // (2 * num_groups))
  return (jnp.tanh(x[..., 0, :]) * nn.sigmoid(x[..., 1, :])).reshape(*lead, c // 2)


class GatedLayer(nn.Module):
  """One layer of vertical and horizontal stacks (van den Oord et al. 2016b, Figure 2).

  The vertical stack at row i sees rows <= i (every column within kernel_size // 2); it reaches
  the horizontal stack only shifted down one row, so the horizontal stack at (i, j) sees rows < i
  through it and, through its own 1 x kernel_size masked convolution, pixels left of j on row i.
  Together they cover every earlier pixel, with no blind spot.
  """
  features: int
  kernel_size: int
  mask_type: Literal['A', 'B']  # 'A' for the first layer, whose inputs are the image itself
  num_groups: int = 1
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, v: jnp.ndarray, h: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    k, r = self.kernel_size, self.kernel_size // 2
    dt = dict(dtype=self.dtype, param_dtype=self.param_dtype)
    v_pre = nn.Conv(2 * self.features, (r + 1, k), padding=((r, 0), (r, r)), name='vertical',
                    **dt)(v)
    v_down = jnp.pad(v_pre, ((0, 0), (1, 0), (0, 0), (0, 0)))[:, :-1]
    # The right half of the 1 x k kernel is masked to zero: it would see later pixels.
    h_pre = MaskedConv(2 * self.features, (1, k), self.mask_type, self.num_groups,
                       name='horizontal', **dt)(h)
    h_pre = h_pre + nn.Dense(2 * self.features, name='vertical_to_horizontal', **dt)(v_down)
    h_out = MaskedConv(self.features, (1, 1), 'B', self.num_groups, name='horizontal_out',
                       **dt)(_gate(h_pre, self.num_groups))
    if self.mask_type == 'B':  # a residual around the first layer would pass the pixel itself
      h_out = h + h_out
    return _gate(v_pre, 1), h_out


class PixelCNN(nn.Module):
  """PixelCNN (van den Oord et al. 2016a), or gated PixelCNN (2016b) with `gated=True`.

  Attributes:
    num_channels: channels of the image (1 grayscale, 3 RGB); also the number of colour groups.
    num_levels: values per channel; 2 is binarized (Bernoulli logits), 256 is 8-bit (softmax).
    features: width of the residual stream (the plain blocks' bottleneck is features // 2);
      with colour it must be a multiple of 2 * num_channels (plain) or num_channels (gated).
    num_layers: residual blocks (plain) or gated layers (gated) after the first 7x7 layer.
    gated: use the gated vertical/horizontal stacks instead of residual blocks.
    first_kernel_size, kernel_size: of the first (mask 'A') layer and of the later layers.
  """
  num_channels: int = 1
  num_levels: int = 2
  features: int = 128
  num_layers: int = 7
  gated: bool = False
  first_kernel_size: int = 7
  kernel_size: int = 3
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jnp.ndarray, *, train: bool) -> jnp.ndarray:
    """Logits for every value of `x = to_input(image, num_levels)`, (batch, H, W, C) floats."""
    del train  # no dropout or batch statistics: training and evaluation are the same function
    if x.shape[-1] != self.num_channels:
      raise ValueError(f'expected {self.num_channels} channels, got input of shape {x.shape}')
    dt = dict(num_groups=self.num_channels, dtype=self.dtype, param_dtype=self.param_dtype)
    x = 2 * x - 1  # centred inputs; an affine map of each value, so causality is unaffected
    k0, k = self.first_kernel_size, self.kernel_size
    if self.gated:
      v, h = GatedLayer(self.features, k0, 'A', **dt)(x, x)
      for _ in range(self.num_layers):
        v, h = GatedLayer(self.features, k, 'B', **dt)(v, h)
    else:
      h = MaskedConv(self.features, (k0, k0), 'A', **dt)(x)
      for _ in range(self.num_layers):  # Figure 5 of 2016a: ReLU-1x1-ReLU-3x3-ReLU-1x1, + input
        y = MaskedConv(self.features // 2, (1, 1), 'B', **dt)(nn.relu(h))
        y = MaskedConv(self.features // 2, (k, k), 'B', **dt)(nn.relu(y))
        h = h + MaskedConv(self.features, (1, 1), 'B', **dt)(nn.relu(y))
    h = MaskedConv(self.features, (1, 1), 'B', name='output_hidden', **dt)(nn.relu(h))
    if self.num_levels == 2:
      return MaskedConv(self.num_channels, (1, 1), 'B', name='output', **dt)(nn.relu(h))
    logits = MaskedConv(self.num_channels * self.num_levels, (1, 1), 'B', name='output',
                        **dt)(nn.relu(h))
    # Channel-major output channels: the group of channel c's logits is c, as the masks require.
    return logits.reshape(*logits.shape[:-1], self.num_channels, self.num_levels)


def log_likelihood(logits: jnp.ndarray, x_int: jnp.ndarray) -> jnp.ndarray:
  """log p(x) in nats per image, `(batch,)`: the sum of the per-pixel, per-channel terms.

  Bernoulli when `logits.shape == x_int.shape` (x_int in {0, 1}); categorical when logits have
  one more, trailing axis of levels.
  """
  logits = logits.astype(jnp.float32)
  if logits.shape == x_int.shape:
    ll = jnp.where(x_int.astype(bool), jax.nn.log_sigmoid(logits), jax.nn.log_sigmoid(-logits))
  elif logits.shape[:-1] == x_int.shape:
    ll = jnp.take_along_axis(jax.nn.log_softmax(logits), x_int[..., None], axis=-1)[..., 0]
  else:
    raise ValueError(f'logits {logits.shape} do not match images {x_int.shape}')
  return ll.sum(axis=tuple(range(1, ll.ndim)))


@functools.partial(jax.jit, static_argnames=('model', 'shape'))
def sample(model: PixelCNN, variables, rng: jax.Array, shape: tuple[int, int, int, int], *,
           temperature: float = 1.0, given: jnp.ndarray | None = None,
           given_mask: jnp.ndarray | None = None) -> jnp.ndarray:
  """Draws integer images of `shape` (batch, H, W, C) one value at a time, in raster order.

  One compiled `fori_loop` over the H * W * C values; each step runs the whole network and
  samples one channel of one pixel with key `fold_in(rng, step)`, so the result is a function of
  `rng`. Logits are divided by `temperature` (> 0). Where `given_mask` (broadcastable to `shape`)
  is true the value is taken from `given` instead, e.g. to complete the bottom half of an image;
  steps where it is true for the whole batch skip the network.
  """
  _, h, w, c = shape
  if (given is None) != (given_mask is None):
    raise ValueError('given and given_mask go together')
  if given is None:
    given, given_mask = jnp.zeros(shape, jnp.int32), jnp.zeros(shape, bool)
  given = jnp.broadcast_to(given, shape).astype(jnp.int32)
  given_mask = jnp.broadcast_to(given_mask, shape).astype(bool)

  def draw(step, x, where):
    logits = model.apply(variables, to_input(x, model.num_levels), train=False)
    logits = logits[(slice(None), *where)].astype(jnp.float32) / temperature
    key = jax.random.fold_in(rng, step)
    if model.num_levels == 2:
      value = jax.random.bernoulli(key, nn.sigmoid(logits)).astype(jnp.int32)
    else:
      value = jax.random.categorical(key, logits)
    return x.at[(slice(None), *where)].set(
        jnp.where(given_mask[(slice(None), *where)], given[(slice(None), *where)], value))

  def body(step, x):
    where = (step // (w * c), step // c % w, step % c)  # row, column, channel
    return jax.lax.cond(given_mask[(slice(None), *where)].all(), lambda x: x,
                        functools.partial(draw, step, where=where), x)

  return jax.lax.fori_loop(0, h * w * c, body, jnp.where(given_mask, given, 0))


@register_model(kind='density', input_shape=(28, 28, 1),
                description='PixelCNN (van den Oord et al. 2016a) for binarized 28x28 images; '
                'set num_channels=3, num_levels=256 for 8-bit colour')
def pixelcnn(**overrides) -> PixelCNN:
  return PixelCNN(**overrides)


@register_model(kind='density', input_shape=(28, 28, 1),
                description='gated PixelCNN without blind spot (van den Oord et al. 2016b), '
                'binarized 28x28 images')
def pixelcnn_gated(**overrides) -> PixelCNN:
  return PixelCNN(**{'gated': True, **overrides})


@register_model(kind='density', input_shape=(8, 8, 1),
                description='small PixelCNN for tests, binarized 8x8')
def pixelcnn_tiny(**overrides) -> PixelCNN:
  return PixelCNN(**{'features': 16, 'num_layers': 2, **overrides})


@register_model(kind='density', input_shape=(8, 8, 1),
                description='small gated PixelCNN for tests; sees every earlier pixel of 8x8')
def pixelcnn_gated_tiny(**overrides) -> PixelCNN:
  return PixelCNN(**{'features': 16, 'num_layers': 4, 'gated': True, **overrides})
