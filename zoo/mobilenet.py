"""MobileNetV2 (Sandler et al., 2018) and MobileNetV3 (Howard et al., 2019).

Both are stacks of inverted residuals (zoo.inverted_residual). The defaults are torchvision's
layout and BatchNorm settings; the weight converters (zoo.weights.mobilenet) set the fields each
source's weights were trained with:
  - torchvision: BatchNorm epsilon 1e-5 (V2) or 1e-3 (V3), PyTorch padding (k // 2 on each side);
  - timm (mobilenetv2_100, mobilenetv3_large_100, mobilenetv3_small_100): the same network, other
    names; epsilon 1e-5 for V3 too. Its V3 applies the 1280-wide layer after the pooling as a 1×1
    conv, which is the same as torchvision's Linear. timm's `tf_` ports also need
    `bn_epsilon=1e-3, padding='same'`;
  - Keras applications (MobileNetV2, MobileNetV3Small/Large): BatchNorm epsilon 1e-3 and momentum
    0.999, and TensorFlow's SAME padding on the stride-2 convs (one pixel less at the top/left on
    even inputs).

Dropout (before the last layer) uses the 'dropout' RNG stream. `num_classes=0` returns the pooled
features, the input of the `head`.
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoo.inverted_residual import (
  BlockConfig,
  InvertedResidualNet,
  chain_stages,
  make_divisible,
  run_stages,
)
from zoo.registry import register_model

# (expansion, channels, blocks, stride) of each stage (Sandler et al., Table 2).
_V2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
              (6, 160, 3, 2), (6, 320, 1, 1))


class MobileNetV2(InvertedResidualNet):
  """MobileNetV2: 3×3/2 stem, 17 inverted residuals with ReLU6, 1×1 conv to 1280, pool, `head`.

  The last conv never narrows below 1280 (`width_multiplier` < 1).
  """

  @property
  def stem_features(self) -> int:
    return make_divisible(32 * self.width_multiplier)

  def stages(self) -> list[list[BlockConfig]]:
    def block(expansion: int, features: int, stride: int) -> Callable[[int], BlockConfig]:
      return lambda n: BlockConfig(n, features, n * expansion, 3, stride, nn.relu6)
    return chain_stages(self.stem_features, (
        [block(expansion, make_divisible(channels * self.width_multiplier),
               stride if j == 0 else 1) for j in range(blocks)]
        for expansion, channels, blocks, stride in _V2_STAGES))

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    conv = self.conv_norm_act()
    x = conv(self.stem_features, 3, 2, activation=nn.relu6, name='stem')(x, train=train)
    x = run_stages(self, x, self.stages(), train=train, conv_norm_act=conv, dtype=self.dtype,
                   param_dtype=self.param_dtype)
    x = conv(make_divisible(1280 * max(1.0, self.width_multiplier)), activation=nn.relu6,
             name='head_conv')(x, train=train)
    return self.classify(jnp.mean(x, axis=(1, 2)), train=train)


# (kernel, expanded, out, squeeze-excitation, hard-swish, stride) of each block, grouped in
# stages as timm groups them (Howard et al., Tables 1 and 2).
_V3_LARGE = (
    ((3, 16, 16, False, False, 1),),
    ((3, 64, 24, False, False, 2), (3, 72, 24, False, False, 1)),
    ((5, 72, 40, True, False, 2), (5, 120, 40, True, False, 1), (5, 120, 40, True, False, 1)),
    ((3, 240, 80, False, True, 2), (3, 200, 80, False, True, 1), (3, 184, 80, False, True, 1),
     (3, 184, 80, False, True, 1)),
    ((3, 480, 112, True, True, 1), (3, 672, 112, True, True, 1)),
    ((5, 672, 160, True, True, 2), (5, 960, 160, True, True, 1), (5, 960, 160, True, True, 1)),
)
_V3_SMALL = (
    ((3, 16, 16, True, False, 2),),
    ((3, 72, 24, False, False, 2), (3, 88, 24, False, False, 1)),
    ((5, 96, 40, True, True, 2), (5, 240, 40, True, True, 1), (5, 240, 40, True, True, 1)),
    ((5, 120, 48, True, True, 1), (5, 144, 48, True, True, 1)),
    ((5, 288, 96, True, True, 2), (5, 576, 96, True, True, 1), (5, 576, 96, True, True, 1)),
)


class MobileNetV3(InvertedResidualNet):
  """MobileNetV3: 3×3/2 hard-swish stem, inverted residuals with ReLU or hard-swish and
  squeeze-excitation gated by a hard sigmoid, 1×1 conv to 6× the last width, pool, a hidden
  Dense ('pre_logits', hard-swish), dropout, `head`.

  `blocks` is `_V3_LARGE`-style: stages of (kernel, expanded, out, se, hard-swish, stride);
  `last_features` the width of 'pre_logits' (1280 large, 1024 small).
  """
  blocks: tuple = _V3_LARGE
  last_features: int = 1280
  bn_epsilon: float = 1e-3
  bn_momentum: float = 0.99

  @property
  def stem_features(self) -> int:
    return make_divisible(16 * self.width_multiplier)

  def stages(self) -> list[list[BlockConfig]]:
    def block(kernel: int, expanded: int, out: int, se: bool, hard_swish: bool,
              stride: int) -> Callable[[int], BlockConfig]:
      features = make_divisible(out * self.width_multiplier)
      expanded = make_divisible(expanded * self.width_multiplier)
      return lambda n: BlockConfig(n, features, expanded, kernel, stride,
                                   nn.hard_swish if hard_swish else nn.relu,
                                   se_features=make_divisible(expanded // 4) if se else 0)
    return chain_stages(self.stem_features,
                        ([block(*spec) for spec in stage] for stage in self.blocks))

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    conv = self.conv_norm_act()
    x = conv(self.stem_features, 3, 2, activation=nn.hard_swish, name='stem')(x, train=train)
    stages = self.stages()
    x = run_stages(self, x, stages, train=train, conv_norm_act=conv, se_activation=nn.relu,
                   se_gate=nn.hard_sigmoid, dtype=self.dtype, param_dtype=self.param_dtype)
    x = conv(6 * stages[-1][-1].features, activation=nn.hard_swish, name='head_conv')(
        x, train=train)
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(make_divisible(self.last_features * self.width_multiplier), dtype=self.dtype,
                 param_dtype=self.param_dtype, name='pre_logits')(x)
    return self.classify(nn.hard_swish(x), train=train)


@register_model(kind='classifier', input_shape=(224, 224, 3),
                description='MobileNetV2 (Sandler et al. 2018), torchvision layout')
def mobilenet_v2(**overrides: Any) -> MobileNetV2:
  return MobileNetV2(**overrides)


@register_model(kind='classifier', input_shape=(224, 224, 3),
                description='MobileNetV3-Large (Howard et al. 2019), torchvision layout')
def mobilenet_v3_large(**overrides: Any) -> MobileNetV3:
  return MobileNetV3(**{'blocks': _V3_LARGE, 'last_features': 1280, **overrides})


@register_model(kind='classifier', input_shape=(224, 224, 3),
                description='MobileNetV3-Small (Howard et al. 2019), torchvision layout')
def mobilenet_v3_small(**overrides: Any) -> MobileNetV3:
  return MobileNetV3(**{'blocks': _V3_SMALL, 'last_features': 1024, **overrides})
