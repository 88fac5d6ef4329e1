"""Building blocks of MobileNetV2/V3 and EfficientNet: the inverted residual and squeeze-excitation.

An inverted residual (Sandler et al., 2018) widens its input with a 1×1 conv ('expand'), filters
each channel with a k×k depthwise conv ('depthwise'), optionally reweights the channels by
squeeze-excitation ('se', Hu et al., 2018), and narrows back with a linear 1×1 conv ('project');
the input is added back when the shapes agree. EfficientNet's MBConv is the same block with SiLU,
SE always on, and stochastic depth on the residual branch.

Models built from these blocks list their architecture as stages of `BlockConfig`s, run by
`run_stages`: block j of stage i is named 'stage{i}_block{j}' (1-based), and the weight converters
read the same list to find each block's name in the other framework.
"""

import dataclasses
import functools
import math
from typing import Any, Callable, Iterable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoo.classifier_layers import classifier_head, conv_init
from zoo.features import sow_stage

ModuleDef = Any
Activation = Callable[[jax.Array], jax.Array]

PADDINGS = ('torch', 'same')


def make_divisible(value: float, divisor: int = 8) -> int:
  """`value` rounded to the nearest multiple of `divisor`, never below 90% of it (TF's rule)."""
  rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
  return rounded + divisor if rounded < 0.9 * value else rounded


def scale_depth(num_blocks: int, depth_multiplier: float) -> int:
  """EfficientNet's compound depth scaling: repeats rounded up."""
  return math.ceil(num_blocks * depth_multiplier)


class ConvNormAct(nn.Module):
  """Conv (grouped for depthwise) → BatchNorm → activation (None: linear).

  `padding`: 'torch' pads (k - 1) // 2 on every side, as PyTorch; 'same' is TensorFlow's SAME,
  which on a stride-2 conv over an even input pads one pixel less at the top/left than at the
  bottom/right. Keras applications (ZeroPadding2D with `correct_pad`, then 'valid') and timm's
  `tf_` ports compute exactly SAME, so weights from them need 'same'.
  `bn_momentum` is flax's (and Keras'): the weight of the old running average, 1 - PyTorch's.
  """
  features: int
  kernel_size: int = 1
  strides: int = 1
  groups: int = 1
  activation: Activation | None = nn.relu
  padding: str = 'torch'
  bn_epsilon: float = 1e-5
  bn_momentum: float = 0.9
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    if self.padding not in PADDINGS:
      raise ValueError(f'padding must be one of {PADDINGS}, not {self.padding!r}')
    k = self.kernel_size
    padding = 'SAME' if self.padding == 'same' else [((k - 1) // 2, (k - 1) // 2)] * 2
    x = nn.Conv(self.features, (k, k), strides=self.strides, padding=padding,
                feature_group_count=self.groups, use_bias=False, kernel_init=conv_init,
                dtype=self.dtype, param_dtype=self.param_dtype, name='conv')(x)
    x = nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum,
                     epsilon=self.bn_epsilon, axis_name=self.bn_axis_name, dtype=self.dtype,
                     param_dtype=self.param_dtype, name='bn')(x)
    return x if self.activation is None else self.activation(x)


class SqueezeExcite(nn.Module):
  """Channel gates from the global average: 1×1 conv 'reduce' → activation → 1×1 'expand' → gate."""
  squeeze_features: int
  activation: Activation = nn.relu
  gate: Activation = nn.sigmoid
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = lambda features, name: nn.Conv(features, (1, 1), kernel_init=conv_init,
                                          dtype=self.dtype, param_dtype=self.param_dtype,
                                          name=name)
    s = jnp.mean(x, axis=(1, 2), keepdims=True)
    s = self.activation(conv(self.squeeze_features, 'reduce')(s))
    return x * self.gate(conv(x.shape[-1], 'expand')(s))


def drop_path(module: nn.Module, x: jax.Array, rate: float, train: bool) -> jax.Array:
  """Stochastic depth (Huang et al., 2016): zeroes whole examples with probability `rate` and
  rescales the rest by 1 / (1 - rate); the identity outside training. Uses the 'dropout' stream."""
  if not train or rate == 0.0:
    return x
  keep = jax.random.bernoulli(module.make_rng('dropout'), 1.0 - rate,
                              (x.shape[0],) + (1,) * (x.ndim - 1))
  return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


@dataclasses.dataclass(frozen=True)
class BlockConfig:
  """One inverted residual. `se_features` 0 means no squeeze-excitation."""
  in_features: int
  features: int
  expanded_features: int
  kernel_size: int
  strides: int
  activation: Activation
  se_features: int = 0
  drop_path_rate: float = 0.0

  @property
  def has_expand(self) -> bool:
    return self.expanded_features != self.in_features

  @property
  def has_residual(self) -> bool:
    return self.strides == 1 and self.in_features == self.features


class InvertedResidual(nn.Module):
  """expand (1×1, if it widens) → depthwise k×k → squeeze-excitation (optional) → project (1×1,
  linear), plus the input (through stochastic depth) when the shapes agree."""
  config: BlockConfig
  conv_norm_act: ModuleDef = ConvNormAct
  se_activation: Activation = nn.relu
  se_gate: Activation = nn.sigmoid
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    c = self.config
    if x.shape[-1] != c.in_features:
      raise ValueError(f'{self.name}: expected {c.in_features} input channels, got {x.shape[-1]}')
    y = x
    if c.has_expand:
      y = self.conv_norm_act(c.expanded_features, activation=c.activation,
                             name='expand')(y, train=train)
    y = self.conv_norm_act(c.expanded_features, c.kernel_size, c.strides,
                           groups=c.expanded_features, activation=c.activation,
                           name='depthwise')(y, train=train)
    if c.se_features:
      y = SqueezeExcite(c.se_features, self.se_activation, self.se_gate, dtype=self.dtype,
                        param_dtype=self.param_dtype, name='se')(y)
    y = self.conv_norm_act(c.features, activation=None, name='project')(y, train=train)
    if c.has_residual:
      y = drop_path(self, y, c.drop_path_rate, train) + x
    return y


def run_stages(module: nn.Module, x: jax.Array, stages: Sequence[Sequence[BlockConfig]], *,
               train: bool, **block_fields: Any) -> jax.Array:
  """Applies the blocks 'stage{i}_block{j}' of `stages` inside `module`'s compact `__call__`.

  Sows the features at each resolution (zoo.features): the output of every stage that the next
  stage downsamples, and of the last stage.
  """
  sown = 0
  for i, stage in enumerate(stages, 1):
    for j, config in enumerate(stage, 1):
      x = InvertedResidual(config, name=f'stage{i}_block{j}', **block_fields)(x, train=train)
    if i == len(stages) or stages[i][0].strides > 1:
      sown += 1
      sow_stage(module, sown, x)
  return x


def chain_stages(in_features: int, stages: Iterable[Iterable[Callable[[int], BlockConfig]]]
                 ) -> list[list[BlockConfig]]:
  """The blocks of each stage, each `block(in_features)` fed the features of the block before
  it (the first, `in_features`): the networks' tables give each block's own settings only."""
  chained = []
  for stage in stages:
    configs = []
    for block in stage:
      configs.append(block(in_features))
      in_features = configs[-1].features
    chained.append(configs)
  return chained


def with_stochastic_depth(stages: Sequence[Sequence[BlockConfig]],
                          rate: float) -> list[list[BlockConfig]]:
  """`stages` with the drop-path rate rising linearly from 0 with the block's index (Tan & Le)."""
  total = sum(len(stage) for stage in stages)
  index = iter(range(total))
  return [[dataclasses.replace(c, drop_path_rate=rate * next(index) / total) for c in stage]
          for stage in stages]


class InvertedResidualNet(nn.Module):
  """Fields and layers shared by the networks of inverted residuals.

  `width_multiplier` scales every width (rounded to multiples of 8). BatchNorm `bn_epsilon`,
  `bn_momentum` (flax's convention) and the conv `padding` ('torch' or 'same') are set to what
  a weight source was trained with (see zoo.weights). `num_classes=0` makes the model headless.
  """
  width_multiplier: float = 1.0
  num_classes: int = 1000
  dropout_rate: float = 0.2
  bn_epsilon: float = 1e-5
  bn_momentum: float = 0.9
  padding: str = 'torch'
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  bn_axis_name: str | None = None

  def conv_norm_act(self, **fields: Any) -> ModuleDef:
    """`ConvNormAct` with this network's BatchNorm, padding and dtypes."""
    return functools.partial(ConvNormAct, padding=self.padding, bn_epsilon=self.bn_epsilon,
                             bn_momentum=self.bn_momentum, dtype=self.dtype,
                             param_dtype=self.param_dtype, bn_axis_name=self.bn_axis_name,
                             **fields)

  def classify(self, x: jax.Array, *, train: bool) -> jax.Array:
    """Dropout ('dropout' stream), then the `head` (or the features, if headless)."""
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    return classifier_head(self, x)
