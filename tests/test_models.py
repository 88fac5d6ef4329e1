"""Tests of the classifiers: parameter counts, shapes, dtypes, BatchNorm, features, registry.

Shapes and dtypes are checked with `jax.eval_shape` (tracing only); real forward passes
run on a few tiny models, to keep the file fast on a 2-core CPU.
"""

import functools
import math
import pathlib
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from zoo.vgg import adaptive_avg_pool

# torchvision's counts at 1000 classes, 224×224 (BatchNorm scale and bias included).
IMAGENET_COUNTS = {
    'resnet18': 11_689_512, 'resnet34': 21_797_672, 'resnet50': 25_557_032,
    'resnet101': 44_549_160, 'resnet152': 60_192_808,
    'vgg11': 132_863_336, 'vgg13': 133_047_848, 'vgg16': 138_357_544,
    'vgg19': 143_667_240, 'vgg11_bn': 132_868_840, 'vgg13_bn': 133_053_736,
    'vgg16_bn': 138_365_992, 'vgg19_bn': 143_678_248,
}
# He et al. 2016, Table 6 (CIFAR-10): 0.27M, 0.46M, 0.66M, 0.85M, 1.7M.
CIFAR_COUNTS = {
    'resnet20': (269_722, '0.27'), 'resnet32': (464_154, '0.46'),
    'resnet44': (658_586, '0.66'), 'resnet56': (853_018, '0.85'),
    'resnet110': (1_727_962, '1.7'),
}
CLASSIFIERS = ['cnn', *IMAGENET_COUNTS, *CIFAR_COUNTS]

# One small member of each family, with 5 classes, on inputs of this shape.
SMALL = {
    'cnn': ({}, (8, 8, 1)),
    'vgg11': (dict(widths=(8, 8, 16, 16, 16), classifier_width=16), (32, 32, 3)),
    'vgg11_bn': (dict(widths=(8, 8, 16, 16, 16), classifier_width=16), (32, 32, 3)),
    'resnet18': (dict(widths=(8, 8, 16, 16)), (32, 32, 3)),
    'resnet50': (dict(stage_sizes=(1, 1, 1, 1), widths=(4, 4, 4, 4)), (32, 32, 3)),
    'resnet20': ({}, (32, 32, 3)),
}


def small_model(name, **overrides):
  """The small `name` and a batch of 2 inputs for it."""
  fields, input_shape = SMALL[name]
  model = zoo.create_model(name, num_classes=5, **{**fields, **overrides})
  return model, jnp.asarray(np.random.default_rng(1).normal(size=(2, *input_shape)), jnp.float32)


def key(seed=0):
  # Random ops compile once per shape; 'rbg' keys compile much faster than the default
  # threefry ones, and the values do not matter here.
  return jax.random.key(seed, impl='rbg')


@functools.cache
def small_variables(name):
  """Float32 variables of the small `name`, initialized once for the whole module."""
  model, x = small_model(name)
  return model.init(key(), x, train=False)


def abstract_variables(model, input_shape):
  """The variables' shapes and dtypes, without computing anything."""
  x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
  return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)


def num_params(params):
  return sum(math.prod(p.shape) for p in jax.tree.leaves(params))


@pytest.mark.parametrize('name', IMAGENET_COUNTS)
def test_imagenet_param_counts_are_torchvision_ones(name):
  info = zoo.model_info(name)
  assert info.input_shape == (224, 224, 3)
  params = abstract_variables(zoo.create_model(name), info.input_shape)['params']
  assert num_params(params) == IMAGENET_COUNTS[name]
  assert params['head']['kernel'].shape[-1] == 1000  # the layer transfer learning retrains


@pytest.mark.parametrize('name', CIFAR_COUNTS)
def test_cifar_resnet_param_counts_match_paper(name):
  count, paper_millions = CIFAR_COUNTS[name]
  info = zoo.model_info(name)
  assert info.input_shape == (32, 32, 3)
  model = zoo.create_model(name)
  assert model.num_classes == 10
  params = abstract_variables(model, info.input_shape)['params']
  assert params['head']['kernel'].shape == (64, 10)
  n = num_params(params)
  assert n == count
  assert f'{n / 1e6:.2g}' == paper_millions


def test_cnn_param_count():
  params = abstract_variables(zoo.create_model('cnn'), zoo.model_info('cnn').input_shape)['params']
  assert params['head']['kernel'].shape == (256, 10)
  # conv 3·3·1·32+32, conv 3·3·32·64+64, Dense 7·7·64·256+256, head 256·10+10.
  assert num_params(params) == 320 + 18_496 + 803_072 + 2_570


@pytest.mark.parametrize('name', SMALL)
@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_output_shape_and_dtypes(name, dtype):
  model, x = small_model(name, dtype=dtype)
  variables = abstract_variables(model, x.shape[1:])
  chex.assert_type(jax.tree.leaves(variables), jnp.float32)  # params stay float32
  logits, state = jax.eval_shape(
      lambda v, x: model.apply(v, x, train=False, mutable=['intermediates']), variables, x)
  chex.assert_shape(logits, (2, 5))
  chex.assert_type(logits, jnp.float32)  # cast back for the loss
  chex.assert_type(jax.tree.leaves(state['intermediates']), dtype)


@pytest.mark.parametrize('name', SMALL)
def test_param_dtype(name):
  model, x = small_model(name, param_dtype=jnp.bfloat16)
  params = abstract_variables(model, x.shape[1:])['params']
  chex.assert_type(jax.tree.leaves(params), jnp.bfloat16)


@pytest.mark.parametrize('name', ['cnn', 'resnet20'])
def test_bfloat16_forward_pass(name):
  # (Float32 forward passes run in the tests below.)
  model, x = small_model(name, dtype=jnp.bfloat16)
  logits = jax.jit(functools.partial(model.apply, train=False))(small_variables(name), x)
  chex.assert_type(logits, jnp.float32)
  chex.assert_tree_all_finite(logits)


@pytest.mark.parametrize('input_shape', [(8, 8, 1), (16, 16, 1), (28, 28, 1), (32, 32, 3)])
def test_cnn_input_sizes(input_shape):
  model = zoo.create_model('cnn')
  x = jax.ShapeDtypeStruct((3, *input_shape), jnp.float32)
  logits = jax.eval_shape(functools.partial(model.init_with_output, train=False),
                          jax.random.key(0), x)[0]
  chex.assert_shape(logits, (3, 10))


@pytest.mark.parametrize('name', ['vgg11_bn', 'resnet20'])
def test_batch_stats_update_in_train_mode(name):
  model, x = small_model(name)
  variables = small_variables(name)
  logits, updates = model.apply(variables, x, train=True, mutable=['batch_stats'],
                                rngs={'dropout': key(2)})
  chex.assert_shape(logits, (2, 5))
  chex.assert_trees_all_equal_structs(updates['batch_stats'], variables['batch_stats'])
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)),
                         updates['batch_stats'], variables['batch_stats'])
  assert all(jax.tree.leaves(changed))


def test_dropout_uses_the_dropout_stream():
  model, x = small_model('cnn')
  apply = lambda key: model.apply(small_variables('cnn'), x, train=True, rngs={'dropout': key})
  chex.assert_trees_all_equal(apply(key(3)), apply(key(3)))
  assert not np.allclose(apply(key(3)), apply(key(4)))


def test_bn_axis_name_gives_global_batch_statistics():
  sharded, x = small_model('resnet20', bn_axis_name='batch')
  whole, _ = small_model('resnet20')
  variables = small_variables('resnet20')
  per_shard = jax.jit(jax.vmap(
      lambda xs: sharded.apply(variables, xs, train=True, mutable=['batch_stats'])[1],
      axis_name='batch'))(x[:, None])
  expected = whole.apply(variables, x, train=True, mutable=['batch_stats'])[1]
  chex.assert_trees_all_close(jax.tree.map(lambda s: s[0], per_shard), expected,
                              rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('name,fields,last', [
    ('resnet20', {}, 'conv2'),
    ('resnet50', dict(stage_sizes=(1,), widths=(4,)), 'conv3'),
])
def test_zero_init_residual(name, fields, last):
  model, x = small_model(name, zero_init_residual=True, **fields)
  params = model.init(key(), x, train=False)['params']
  blocks = [k for k in params if '_block' in k]
  assert blocks
  for block in blocks:
    assert not jnp.any(params[block][last]['bn']['scale'])
  assert jnp.all(params['stem']['bn']['scale'] == 1)


def test_adaptive_avg_pool_follows_torch_bins():
  x = jnp.arange(5.0).reshape(1, 5, 1, 1)
  # torch bins of 5 into 3: [0, 2), [1, 4), [3, 5).
  chex.assert_trees_all_close(adaptive_avg_pool(x, (3, 1))[0, :, 0, 0],
                              jnp.array([0.5, 2.0, 3.5]))
  y = jnp.asarray(np.random.default_rng(0).normal(size=(2, 14, 14, 3)), jnp.float32)
  chex.assert_trees_all_close(adaptive_avg_pool(y, (7, 7)),
                              y.reshape(2, 7, 2, 7, 2, 3).mean(axis=(2, 4)), atol=1e-6)
  one = jnp.asarray(np.random.default_rng(1).normal(size=(2, 1, 1, 3)), jnp.float32)
  chex.assert_trees_all_close(adaptive_avg_pool(one, (7, 7)),
                              jnp.broadcast_to(one, (2, 7, 7, 3)))


def test_vgg_on_cifar_sized_input():
  # torchvision's default 7×7 pooling repeats the final 1×1 map.
  model, x = small_model('vgg11_bn')
  variables = small_variables('vgg11_bn')
  assert variables['params']['fc1']['kernel'].shape == (7 * 7 * 16, 16)
  logits = model.apply(variables, x, train=False)
  chex.assert_shape(logits, (2, 5))
  chex.assert_tree_all_finite(logits)
  # A CIFAR recipe pools globally into a narrow classifier.
  cifar = zoo.create_model('vgg16', num_classes=10, pool_size=(1, 1), classifier_width=512)
  params = abstract_variables(cifar, (32, 32, 3))['params']
  assert params['fc1']['kernel'].shape == (512, 512)
  # vgg16's convs, then 512-512-512-10.
  assert num_params(params) == 14_714_688 + 2 * (512 * 512 + 512) + 5130


FEATURE_SHAPES = {
    'cnn': {'stage1': (8, 8, 32), 'stage2': (4, 4, 64), 'pooled': (256,)},
    'vgg11': {'stage1': (32, 32, 8), 'stage2': (16, 16, 8), 'stage3': (8, 8, 16),
              'stage4': (4, 4, 16), 'stage5': (2, 2, 16), 'pooled': (16,)},
    'resnet18': {'stage1': (8, 8, 8), 'stage2': (4, 4, 8), 'stage3': (2, 2, 16),
                 'stage4': (1, 1, 16), 'pooled': (16,)},
    'resnet50': {'stage1': (8, 8, 16), 'stage2': (4, 4, 16), 'stage3': (2, 2, 16),
                 'stage4': (1, 1, 16), 'pooled': (16,)},
    'resnet20': {'stage1': (32, 32, 16), 'stage2': (16, 16, 32), 'stage3': (8, 8, 64),
                 'pooled': (64,)},
}


@pytest.mark.parametrize('name', FEATURE_SHAPES)
def test_extract_features_keys_and_shapes(name):
  model, x = small_model(name)
  variables = abstract_variables(model, x.shape[1:])
  feats = jax.eval_shape(functools.partial(zoo.extract_features, model), variables, x)
  assert feats.keys() == FEATURE_SHAPES[name].keys()
  for key, shape in FEATURE_SHAPES[name].items():
    chex.assert_shape(feats[key], (2, *shape))


@pytest.mark.parametrize('name', ['cnn', 'resnet20'])
def test_pooled_feature_is_the_head_input(name):
  model, x = small_model(name)
  variables = small_variables(name)
  pooled = zoo.extract_features(model, variables, x)['pooled']
  head = variables['params']['head']
  chex.assert_trees_all_close(pooled @ head['kernel'] + head['bias'],
                              model.apply(variables, x, train=False), atol=1e-5)


def test_extract_features_in_train_mode():
  model, x = small_model('vgg11_bn')
  feats = zoo.extract_features(model, small_variables('vgg11_bn'), x, train=True,
                               rngs={'dropout': key()})
  chex.assert_shape(feats['pooled'], (2, 16))


def test_list_models():
  names = zoo.list_models()
  assert names == sorted(names)
  assert set(CLASSIFIERS) <= set(names)
  assert zoo.list_models('vgg*_bn') == ['vgg11_bn', 'vgg13_bn', 'vgg16_bn', 'vgg19_bn']
  assert zoo.list_models('resnet1??') == ['resnet101', 'resnet110', 'resnet152']
  assert zoo.list_models('cnn') == ['cnn']
  assert zoo.list_models('no_such_model*') == []


def test_create_model_errors_name_close_matches():
  with pytest.raises(ValueError, match=r"unknown model 'resnet19'.*resnet18"):
    zoo.create_model('resnet19')
  with pytest.raises(ValueError, match='vgg16'):
    zoo.create_model('vgg16bn')
  with pytest.raises(TypeError, match=r"create_model\('cnn'\).*num_class"):
    zoo.create_model('cnn', num_class=3)


def test_create_model_overrides_fields():
  model = zoo.create_model('resnet18', num_classes=3, dtype=jnp.bfloat16)
  assert (model.num_classes, model.dtype, model.stage_sizes) == (3, jnp.bfloat16, (2, 2, 2, 2))


def test_import_zoo_needs_only_jax_and_flax():
  heavy = ('tensorflow', 'tensorflow_datasets', 'optax', 'orbax')
  code = ('import sys, zoo; print(sorted({m.split(".")[0] for m in sys.modules} & '
          f'{set(heavy)!r}))')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                       check=True, cwd=pathlib.Path(__file__).parents[1])
  assert out.stdout.strip() == '[]'
