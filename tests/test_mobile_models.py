"""MobileNetV2/V3 and EfficientNet: headless models, sown features, training mode, stochastic depth.

(Parameter counts and the numerical match with torchvision, timm and Keras are in
test_weights_mobile.py.) Shapes are checked with `jax.eval_shape`, tracing only.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from zoo.inverted_residual import drop_path, make_divisible


@pytest.mark.parametrize('name, fields, width, stage_channels', [
    ('mobilenet_v3_small', {}, 1024, (16, 24, 48, 96)),
    # One block a stage keeps the trace short; the widths are B0's.
    ('efficientnet_b0', {'depth_multiplier': 0.1}, 1280, (16, 24, 40, 112, 320)),
])
def test_headless_training_pass_gives_pooled_features_and_stage_maps(name, fields, width,
                                                                     stage_channels):
  model = zoo.create_model(name, num_classes=0, dtype=jnp.bfloat16, **fields)
  x = jax.ShapeDtypeStruct((2, 64, 64, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  assert 'head' not in variables['params']
  features, state = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=True, rngs={'dropout': jax.random.key(1)},
                               mutable=['batch_stats', 'intermediates']), variables, x)
  # Outputs are float32 whatever the computation dtype (the zoo convention).
  assert features.shape == (2, width) and features.dtype == jnp.float32
  stages = state['intermediates']
  assert sorted(stages) == ['pooled'] + [f'stage{i}' for i in range(1, len(stage_channels) + 1)]
  # The last feature map at each resolution: strides 2, 4, 8, 16, 32 (V3-Small starts at 4).
  strides = (4, 8, 16, 32) if len(stage_channels) == 4 else (2, 4, 8, 16, 32)
  for i, (channels, stride) in enumerate(zip(stage_channels, strides), 1):
    assert stages[f'stage{i}'][0].shape == (2, 64 // stride, 64 // stride, channels)


class _DropPath(nn.Module):
  rate: float

  @nn.compact
  def __call__(self, x, *, train):
    return drop_path(self, x, self.rate, train)


def test_drop_path_drops_whole_examples_and_keeps_the_expectation():
  x = jnp.ones((2000, 1, 2, 3))
  y = _DropPath(0.25).apply({}, x, train=True, rngs={'dropout': jax.random.key(0, impl='rbg')})
  per_example = np.asarray(y).reshape(2000, -1)
  np.testing.assert_allclose(np.unique(per_example), [0.0, 1 / 0.75], rtol=1e-6)
  assert (per_example == per_example[:, :1]).all()  # all or nothing per example
  assert abs(per_example.mean() - 1.0) < 0.05
  np.testing.assert_array_equal(_DropPath(0.25).apply({}, x, train=False), x)


def test_make_divisible_is_torchvisions():
  # Multiples of 8, the nearest one, never 10% below the value.
  assert [make_divisible(v) for v in (32 * 1.1, 32 * 0.35, 88 * 0.5, 12)] == [32, 16, 48, 16]
