"""Tests of the ViT and ConvNeXt families: parameter counts, headless models, features, dropout.

Counts and shapes come from `jax.eval_shape` (tracing only); forward passes use tiny variants.
"""

import functools
import math

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from zoo.classifier_layers import drop_path

# At 1000 classes, 224×224: torchvision's vit_b_16 and convnext_*, timm's vit_tiny/small.
COUNTS = {
    'vit_tiny_patch16_224': 5_717_416, 'vit_small_patch16_224': 22_050_664,
    'vit_base_patch16_224': 86_567_656, 'vit_b_16': 86_567_656,
    'convnext_tiny': 28_589_128, 'convnext_small': 50_223_688,
    'convnext_base': 88_591_464, 'convnext_large': 197_767_336,
}
TINY = {
    'vit_tiny_patch16_224': dict(width=32, depth=2, num_heads=2, image_size=32),
    'convnext_tiny': dict(stage_sizes=(1, 1, 1, 1), widths=(8, 8, 16, 16)),
}


def tiny_model(name, **overrides):
  """A tiny `name` and a batch of two 32×32 images for it."""
  model = zoo.create_model(name, **{'num_classes': 5, **TINY[name], **overrides})
  return model, jnp.asarray(np.random.default_rng(1).normal(size=(2, 32, 32, 3)), jnp.float32)


def key(seed=0):
  # 'rbg' keys compile much faster than the default threefry ones; the values do not matter.
  return jax.random.key(seed, impl='rbg')


def abstract_variables(model, shape):
  x = jax.ShapeDtypeStruct(shape, jnp.float32)
  return jax.eval_shape(lambda x: model.init(key(), x, train=False), x)


def random_variables(model, x):
  """Random values in the shapes of `model`'s variables: compiling `init` costs seconds."""
  rng = np.random.default_rng(0)
  return jax.tree.map(lambda s: jnp.asarray(0.2 * rng.normal(size=s.shape), s.dtype),
                      abstract_variables(model, x.shape))


@pytest.mark.parametrize('name', COUNTS)
def test_param_counts(name):
  assert zoo.model_info(name).input_shape == (224, 224, 3)
  params = abstract_variables(zoo.create_model(name), (1, 224, 224, 3))['params']
  assert sum(math.prod(p.shape) for p in jax.tree.leaves(params)) == COUNTS[name]
  assert params['head']['kernel'].shape[-1] == 1000


@pytest.mark.parametrize('name,width', [('vit_tiny_patch16_224', 32), ('convnext_tiny', 16)])
def test_headless_model_returns_the_pooled_features(name, width):
  model, x = tiny_model(name)
  headless, _ = tiny_model(name, num_classes=0)
  variables = random_variables(model, x)
  backbone = {'params': {k: v for k, v in variables['params'].items() if k != 'head'}}
  pooled, features = jax.jit(lambda: (headless.apply(backbone, x, train=False),
                                      zoo.extract_features(model, variables, x)))()
  chex.assert_shape(pooled, (2, width))
  chex.assert_trees_all_close(pooled, features['pooled'])
  assert abstract_variables(headless, x.shape)['params'].keys() == backbone['params'].keys()


@pytest.mark.parametrize('name,stages', [
    ('vit_tiny_patch16_224', [(2, 2, 32)] * 2),  # 2 blocks: stages after blocks 1 and 2
    ('convnext_tiny', [(8, 8, 8), (4, 4, 8), (2, 2, 16), (1, 1, 16)]),
])
def test_stage_features(name, stages):
  model, x = tiny_model(name)
  feats = jax.eval_shape(functools.partial(zoo.extract_features, model),
                         abstract_variables(model, x.shape), x)
  assert feats.keys() == {f'stage{i}' for i in range(1, len(stages) + 1)} | {'pooled'}
  for i, shape in enumerate(stages, 1):
    chex.assert_shape(feats[f'stage{i}'], (2, *shape))


def test_vit_sows_each_quarter_of_the_depth():
  model = zoo.create_model('vit_base_patch16_224')
  assert model.stage_blocks == (3, 6, 9, 12)
  feats = jax.eval_shape(functools.partial(zoo.extract_features, model),
                         abstract_variables(model, (1, 224, 224, 3)),
                         jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))
  chex.assert_shape([feats[f'stage{i}'] for i in range(1, 5)], (1, 14, 14, 768))


def test_vit_position_embeddings_follow_image_size():
  model = zoo.create_model('vit_small_patch16_224', image_size=384)
  params = abstract_variables(model, (1, 384, 384, 3))['params']
  assert params['pos_embedding'].shape == (1, 24 * 24 + 1, 384)
  with pytest.raises(ValueError, match='image_size=384 got 224x224 images'):
    abstract_variables(model, (1, 224, 224, 3))


@pytest.mark.parametrize('name', TINY)
def test_bfloat16_compute_keeps_float32_params_and_logits(name):
  model, x = tiny_model(name, dtype=jnp.bfloat16)
  variables = abstract_variables(model, x.shape)
  chex.assert_type(jax.tree.leaves(variables), jnp.float32)
  logits = jax.eval_shape(functools.partial(model.apply, train=False), variables, x)
  chex.assert_shape(logits, (2, 5))
  chex.assert_type(logits, jnp.float32)


@pytest.mark.parametrize('name,rates', [
    ('vit_tiny_patch16_224', dict(dropout_rate=0.1, attention_dropout_rate=0.1,
                                  drop_path_rate=0.2)),
    ('convnext_tiny', dict(dropout_rate=0.1, drop_path_rate=0.3)),
])
def test_dropout_and_drop_path_use_the_dropout_stream(name, rates):
  model, x = tiny_model(name, **rates)
  variables = random_variables(model, x)

  run = jax.jit(lambda key1, key2: [model.apply(variables, x, train=True, rngs={'dropout': k})
                                    for k in (key1, key2)])
  first, same = run(key(3), key(3))
  chex.assert_trees_all_equal(first, same)
  assert not np.allclose(first, run(key(3), key(4))[1])
  # Eval mode draws no randomness: it traces without a 'dropout' key.
  jax.eval_shape(functools.partial(model.apply, train=False), variables, x)


class _DropPath(nn.Module):
  @nn.compact
  def __call__(self, x, *, train):
    return drop_path(x, 0.5, train=train)


def test_drop_path_drops_whole_examples_and_rescales():
  x = jnp.ones((64, 3, 3, 2))
  y = _DropPath().apply({}, x, train=True, rngs={'dropout': key()})
  per_example = np.asarray(y).reshape(64, -1)
  assert set(np.unique(per_example)) == {0.0, 2.0}
  assert np.all(per_example.min(1) == per_example.max(1))  # one decision per example
  chex.assert_trees_all_equal(_DropPath().apply({}, x, train=False), x)
