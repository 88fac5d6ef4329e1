"""FCN (Long et al. 2015, "Fully Convolutional Networks for Semantic Segmentation") on any zoo
classifier: per-pixel logits from the classifier's stage features.

The backbone is an ordinary zoo classifier (`zoo.create_model('resnet18')`, …), so a trained
classifier's parameters load into it unchanged: they sit under params['encoder'] (and
batch_stats['encoder']). Its stage features are the ones it sows into 'intermediates'
(`zoo.features`); its `head` is computed but unused, so it gets no gradient.
"""

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.typing import Dtype

from zoo import features as features_lib
from zoo.decoders import get_decoder
from zoo.registry import create_model, register_model


class FCN(nn.Module):
  """Input (B, H, W, C); float32 logits (B, H, W, num_classes).

  The deepest of the last `num_stages` stage features is scored by a 1x1 convolution to
  `features` channels; it is then upsampled (by `decoder`) to each shallower stage in turn and
  added to that stage's own 1x1 projection (the skip fusion of FCN-8s for resnet stages 2-4),
  and a last decoder upsamples the sum to the input size with `num_classes` outputs. H and W
  must be multiples of the backbone's total stride (32 for the ImageNet ResNets).

  Attributes:
    backbone: an unbound zoo classifier; its `num_classes` does not matter.
    num_classes: classes per pixel (background included).
    num_stages: how many of the deepest stages to fuse.
    features: channels of the projections and of the decoder's hidden stages.
    decoder: 'transpose' or 'resize' (see `zoo.decoders.DECODERS`).
  """
  backbone: nn.Module
  num_classes: int
  num_stages: int = 3
  features: int = 64
  decoder: str = 'transpose'
  dtype: Dtype | None = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    stages = self._stage_features(x, train)
    names = sorted(stages, key=lambda name: int(name[len('stage'):]))[-self.num_stages:]
    project = lambda y, name: nn.Conv(self.features, (1, 1), dtype=self.dtype,
                                      param_dtype=self.param_dtype, name=name)(y)
    y = project(stages[names[-1]], f'project_{names[-1]}')
    for name in reversed(names[:-1]):
      y = self._upsample(y, stages[name].shape[1:3], self.features, f'up_{name}', train)
      y = y + project(stages[name], f'project_{name}')
    y = self._upsample(y, x.shape[1:3], self.num_classes, 'output', train)
    return y.astype(jnp.float32)

  def _stage_features(self, x: jax.Array, train: bool) -> dict[str, jax.Array]:
    """Runs the backbone on `x` (its BatchNorm statistics update when `train`)."""
    if self.is_initializing():
      initial = self.backbone.init(self.make_rng('params'), x, train=False)
    # `variable`, not `param`: `param` calls its initializer (here: the backbone's init) on every
    # apply to check the shape.
    params = self.variable('params', 'encoder', lambda: initial['params']).value
    stats = self.variable('batch_stats', 'encoder', lambda: initial.get('batch_stats', {}))
    update_stats = train and bool(stats.value) and self.is_mutable_collection('batch_stats')
    mutable = [features_lib.COLLECTION] + (['batch_stats'] if update_stats else [])
    rngs = {'dropout': self.make_rng('dropout')} if train and self.has_rng('dropout') else None
    _, state = self.backbone.apply({'params': params, 'batch_stats': stats.value}, x,
                                   train=train, rngs=rngs, mutable=mutable)
    if update_stats:
      stats.value = state['batch_stats']
    # `sow` appends to a tuple; the last entry is this call's.
    return {name: values[-1] for name, values in state[features_lib.COLLECTION].items()
            if name.startswith('stage')}

  def _upsample(self, y: jax.Array, size: tuple[int, int], out_channels: int, name: str,
                train: bool) -> jax.Array:
    """`y` upsampled by `decoder` to `size`, a power-of-two multiple of its own size."""
    ratio = size[0] // y.shape[1]
    if ratio * y.shape[1] != size[0] or ratio * y.shape[2] != size[1] or ratio & (ratio - 1):
      raise ValueError(f'FCN: feature map {y.shape[1]}x{y.shape[2]} does not divide '
                       f'{size[0]}x{size[1]} by a power of two; give an input whose height and '
                       "width are multiples of the backbone's total stride")
    if ratio == 1:
      return nn.Conv(out_channels, (1, 1), dtype=self.dtype, param_dtype=self.param_dtype,
                     name=name)(y)
    hidden = (self.features,) * (int(math.log2(ratio)) - 1)
    return get_decoder(self.decoder)(features=hidden, out_channels=out_channels,
                                     batch_norm=False, dtype=self.dtype,
                                     param_dtype=self.param_dtype, name=name)(y, train=train)


def fcn(backbone: str, *, num_classes: int = 21, dtype: Dtype | None = None,
        backbone_kwargs: dict[str, Any] | None = None, **fields: Any) -> FCN:
  """An FCN on the zoo classifier registered as `backbone`, computing in `dtype`."""
  kwargs = dict(backbone_kwargs or {})
  if dtype is not None:
    kwargs['dtype'] = dtype
  return FCN(create_model(backbone, **kwargs), num_classes=num_classes, dtype=dtype, **fields)


@register_model(kind='segmenter', input_shape=(224, 224, 3),
                description='FCN-8s-style head on resnet18 stages 2-4; per-pixel logits')
def fcn_resnet18(**overrides) -> FCN:
  return fcn('resnet18', **overrides)


@register_model(kind='segmenter', input_shape=(224, 224, 3),
                description='FCN-8s-style head on the last three mobilenet_v2 stages; per-pixel '
                            'logits')
def fcn_mobilenet_v2(**overrides) -> FCN:
  return fcn('mobilenet_v2', **overrides)
