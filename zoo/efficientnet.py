"""EfficientNet-B0 … B7 (Tan & Le, 2019).

B0 is a stack of MBConv blocks (inverted residuals with SiLU and squeeze-excitation, see
zoo.inverted_residual); B1-B7 scale its widths and depths by the compound coefficients below.
Stochastic depth on the residual branches rises linearly to `drop_path_rate` and, like the
dropout before the `head`, uses the 'dropout' RNG stream.

The defaults are torchvision's; the weight converters (zoo.weights.efficientnet) set the fields
each source's weights need:
  - torchvision: BatchNorm epsilon 1e-5 for B0-B4 (trained in PyTorch), 1e-3 and PyTorch
    momentum 0.01 for B5-B7 (ported from TensorFlow); PyTorch padding (k // 2 on each side);
  - timm (efficientnet_b0 …): the same network, other names, epsilon 1e-5. timm's `tf_`
    ports (tf_efficientnet_b0 …) also need `bn_epsilon=1e-3, padding='same'`;
  - Keras applications (EfficientNetB0 …): epsilon 1e-3, momentum 0.99, TensorFlow's SAME
    padding. Keras puts the input normalization inside the model (Rescaling 1/255,
    Normalization, Rescaling); zoo's EfficientNet, as torchvision's, takes inputs already
    normalized by the ImageNet mean and standard deviation, which is what those layers compute
    with the ImageNet weights; the converter checks that and leaves them out.

`num_classes=0` returns the pooled features, the input of the `head`.
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
  scale_depth,
  with_stochastic_depth,
)
from zoo.registry import register_model

# (expansion, kernel, stride, channels, blocks) of each stage of B0 (Tan & Le, Table 1).
_B0_STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
              (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))


class EfficientNet(InvertedResidualNet):
  """EfficientNet: 3×3/2 stem, 7 stages of MBConv, 1×1 conv to 1280 (scaled), pool, `head`."""
  depth_multiplier: float = 1.0
  drop_path_rate: float = 0.2
  activation: Callable[[jax.Array], jax.Array] = nn.silu

  def _width(self, channels: int) -> int:
    return make_divisible(channels * self.width_multiplier)

  def stages(self) -> list[list[BlockConfig]]:
    def block(expansion: int, kernel: int, stride: int,
              features: int) -> Callable[[int], BlockConfig]:
      return lambda n: BlockConfig(n, features, make_divisible(n * expansion), kernel, stride,
                                   self.activation, se_features=max(1, n // 4))
    stages = chain_stages(self._width(32), (
        [block(expansion, kernel, stride if j == 0 else 1, self._width(channels))
         for j in range(scale_depth(blocks, self.depth_multiplier))]
        for expansion, kernel, stride, channels, blocks in _B0_STAGES))
    return with_stochastic_depth(stages, self.drop_path_rate)

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    conv = self.conv_norm_act(activation=self.activation)
    x = conv(self._width(32), 3, 2, name='stem')(x, train=train)
    x = run_stages(self, x, self.stages(), train=train, conv_norm_act=conv,
                   se_activation=self.activation, se_gate=nn.sigmoid, dtype=self.dtype,
                   param_dtype=self.param_dtype)
    x = conv(self._width(1280), name='head_conv')(x, train=train)
    return self.classify(jnp.mean(x, axis=(1, 2)), train=train)


def _efficientnet(width: float, depth: float, dropout_rate: float, ported_from_tf: bool,
                  overrides: dict[str, Any]) -> EfficientNet:
  # torchvision's B5-B7 weights were ported from TensorFlow with its BatchNorm settings.
  bn = {'bn_epsilon': 1e-3, 'bn_momentum': 0.99} if ported_from_tf else {}
  return EfficientNet(**{'width_multiplier': width, 'depth_multiplier': depth,
                         'dropout_rate': dropout_rate, **bn, **overrides})


@register_model(kind='classifier', input_shape=(224, 224, 3),
                description='EfficientNet-B0 (Tan & Le 2019), torchvision layout')
def efficientnet_b0(**overrides: Any) -> EfficientNet:
  return _efficientnet(1.0, 1.0, 0.2, False, overrides)


@register_model(kind='classifier', input_shape=(240, 240, 3),
                description='EfficientNet-B1 (Tan & Le 2019), torchvision layout')
def efficientnet_b1(**overrides: Any) -> EfficientNet:
  return _efficientnet(1.0, 1.1, 0.2, False, overrides)


@register_model(kind='classifier', input_shape=(260, 260, 3),
                description='EfficientNet-B2 (Tan & Le 2019), torchvision layout')
def efficientnet_b2(**overrides: Any) -> EfficientNet:
  return _efficientnet(1.1, 1.2, 0.3, False, overrides)


@register_model(kind='classifier', input_shape=(300, 300, 3),
                description='EfficientNet-B3 (Tan & Le 2019), torchvision layout')
def efficientnet_b3(**overrides: Any) -> EfficientNet:
  return _efficientnet(1.2, 1.4, 0.3, False, overrides)


@register_model(kind='classifier', input_shape=(380, 380, 3),
                description='EfficientNet-B4 (Tan & Le 2019), torchvision layout')
def efficientnet_b4(**overrides: Any) -> EfficientNet:
  return _efficientnet(1.4, 1.8, 0.4, False, overrides)


@register_model(kind='classifier', input_shape=(456, 456, 3),
                description='EfficientNet-B5 (Tan & Le 2019), torchvision layout')
def efficientnet_b5(**overrides: Any) -> EfficientNet:
  return _efficientnet(1.6, 2.2, 0.4, True, overrides)


@register_model(kind='classifier', input_shape=(528, 528, 3),
                description='EfficientNet-B6 (Tan & Le 2019), torchvision layout')
def efficientnet_b6(**overrides: Any) -> EfficientNet:
  return _efficientnet(1.8, 2.6, 0.5, True, overrides)


@register_model(kind='classifier', input_shape=(600, 600, 3),
                description='EfficientNet-B7 (Tan & Le 2019), torchvision layout')
def efficientnet_b7(**overrides: Any) -> EfficientNet:
  return _efficientnet(2.0, 3.1, 0.5, True, overrides)
