"""zoo's model-level API: headless models, feature info and stage subsets, parameter counts,
float32 outputs under bfloat16, rematerialized blocks, pretrained configs, the summary table and
the transfer helpers."""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import zoo
from zoo import resnet, transfer
from zoo.summary import summary


def _abstract(model, shape, **kwargs):
  x = jax.ShapeDtypeStruct((2, *shape), jnp.float32)
  rngs = {'params': jax.random.key(0), 'dropout': jax.random.key(0), 'sample': jax.random.key(0)}
  return jax.eval_shape(lambda x: model.init_with_output(rngs, x, train=False, **kwargs), x)


@pytest.mark.parametrize('name, shape, width', [
    ('cnn', (28, 28, 1), 256), ('lenet5', (32, 32, 1), 84), ('alexnet', (64, 64, 3), 4096),
    ('vgg11', (32, 32, 3), 4096), ('resnet18', (32, 32, 3), 512),
    ('resnet50', (32, 32, 3), 2048), ('inception_v3', (75, 75, 3), 2048)])
def test_num_classes_zero_returns_the_pooled_features(name, shape, width):
  pooled, variables = _abstract(zoo.create_model(name, num_classes=0), shape)
  assert (pooled.shape, pooled.dtype) == ((2, width), jnp.float32)
  assert 'head' not in variables['params']


@pytest.mark.parametrize('name, count', [('alexnet', 61_100_840), ('lenet5', 61_706),
                                         ('resnet50', 25_557_032), ('vgg16', 138_357_544)])
def test_parameter_counts_at_the_default_input(name, count):
  _, variables = _abstract(zoo.create_model(name), zoo.model_info(name).input_shape)
  assert sum(math.prod(p.shape) for p in jax.tree.leaves(variables['params'])) == count


def test_feature_info_and_a_subset_of_stages():
  info = zoo.feature_info(zoo.create_model('resnet50'), (224, 224, 3))
  assert [(f.name, f.channels, f.reduction) for f in info] == [
      ('stage1', 256, 4), ('stage2', 512, 8), ('stage3', 1024, 16), ('stage4', 2048, 32)]
  model = zoo.create_model('resnet18', num_classes=0)
  x = jnp.ones((1, 32, 32, 3))
  variables = model.init(jax.random.key(0), x, train=False)
  extract = jax.jit(functools.partial(zoo.extract_features, model, stages=('stage2', 'stage4')))
  features = extract(variables, x)
  assert {k: v.shape for k, v in features.items()} == {'stage2': (1, 4, 4, 128),
                                                       'stage4': (1, 1, 1, 512)}
  with pytest.raises(ValueError, match="no feature 'stage5'; it has stage1, stage2"):
    zoo.extract_features(model, variables, x, stages=('stage5',))


def test_models_without_stages_say_so():
  model = zoo.create_model('sr_resize', features=4)
  x = jnp.ones((1, 8, 8, 3))
  variables = model.init(jax.random.key(0), x, train=False)
  with pytest.raises(ValueError, match='SuperResolution sows no stage features'):
    zoo.extract_features(model, variables, x)
  with pytest.raises(ValueError, match='sows no stage features'):
    zoo.feature_info(model, (8, 8, 3))


def _one_model_per_module():
  """The first registered model of each zoo module: the output dtype is a class's doing."""
  first = {}
  for name in zoo.list_models():
    first.setdefault(zoo.model_info(name).constructor.__module__, name)
  return sorted(first.values())


@pytest.mark.parametrize('name', _one_model_per_module())
def test_every_model_outputs_float32_under_bfloat16(name):
  model = zoo.create_model(name, dtype=jnp.bfloat16)
  shape = zoo.model_info(name).input_shape
  if name.startswith('inception'):
    shape = (75, 75, 3)
  out, _ = _abstract(model, shape)
  assert {leaf.dtype for leaf in jax.tree.leaves(out)} == {jnp.dtype(jnp.float32)}, name


def test_rematerialized_blocks_give_the_same_values_and_gradients():
  kwargs = {'stage_sizes': (1, 1), 'widths': (4, 8), 'stem': 'cifar', 'num_classes': 3}
  plain = resnet.ResNet(block_cls=resnet.BasicBlock, **kwargs)
  remat = resnet.ResNet(block_cls=nn.remat(resnet.BasicBlock, static_argnums=(2,)), **kwargs)
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
  variables = plain.init(jax.random.key(0), x, train=False)
  assert jax.tree.structure(remat.init(jax.random.key(0), x, train=False)) == (
      jax.tree.structure(variables))

  def loss(model, params):
    logits, _ = model.apply({**variables, 'params': params}, x, True, mutable=['batch_stats'])
    return jnp.sum(logits ** 2)

  want = jax.jit(jax.value_and_grad(functools.partial(loss, plain)))(variables['params'])
  got = jax.jit(jax.value_and_grad(functools.partial(loss, remat)))(variables['params'])
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5, atol=1e-6), got, want)


def test_pretrained_configs_per_source():
  torch_config = zoo.pretrained_config('resnet50', 'torchvision')
  assert torch_config.input_size == (224, 224, 3) and torch_config.crop_pct == 0.875
  names = torch_config.class_names()
  assert len(names) == 1000 and names[0] == 'tench' and names[207] == 'golden retriever'
  assert zoo.pretrained_config('resnet50', 'timm').interpolation == 'bicubic'
  caffe = zoo.pretrained_config('resnet50', 'keras').preprocessing
  pixel = np.array([[[0.2, 0.4, 0.6]]])  # RGB in [0, 1]
  np.testing.assert_allclose(caffe(pixel)[0, 0], [0.6 * 255 - 103.939, 0.4 * 255 - 116.779,
                                                  0.2 * 255 - 123.68], rtol=1e-5)
  tf = zoo.pretrained_config('inception_v3', 'torchvision').preprocessing
  np.testing.assert_allclose(tf(pixel)[0, 0], [-0.6, -0.2, 0.2], rtol=1e-5)
  fid = zoo.pretrained_config('inception_v3', 'pytorch_fid', num_classes=1008)
  assert fid.class_names() is None
  with pytest.raises(ValueError, match="unknown weight source 'caffe2'"):
    zoo.pretrained_config('resnet50', 'caffe2')


def test_summary_lists_layers_with_output_shapes_and_parameters():
  table = summary(zoo.create_model('resnet18'), (224, 224, 3))
  lines = table.splitlines()
  assert any(line.split()[:3] == ['stem', 'ConvBN', '(1,'] for line in lines)
  assert any(line.startswith('head') and line.endswith('513,000') for line in lines)
  assert '11,689,512 trainable' in lines[-1]


def test_transfer_helpers_replace_the_head_and_freeze_the_backbone():
  model = zoo.create_model('resnet20', widths=(4, 8, 8))
  x = jax.random.normal(jax.random.key(1), (2, 8, 8, 3))
  variables = model.init(jax.random.key(0), x, train=False)
  new_model, new = transfer.replace_head(model, variables, 5, jax.random.key(2), (8, 8, 3))
  assert new_model.num_classes == 5 and new['params']['head']['kernel'].shape == (8, 5)
  np.testing.assert_array_equal(new['params']['stem']['conv']['kernel'],
                                variables['params']['stem']['conv']['kernel'])
  labels = transfer.freeze_labels(new['params'])
  assert labels['head'] == 'train' and labels['stem'] == 'frozen'
  tx = optax.multi_transform({'train': optax.sgd(0.1), 'frozen': optax.set_to_zero()}, labels)

  def loss(params):
    logits, updates = new_model.apply({**new, 'params': params}, x, train=True,
                                      mutable=['batch_stats'])
    return jnp.sum(logits ** 2), updates

  grads, updates = jax.jit(jax.grad(loss, has_aux=True))(new['params'])
  steps, _ = tx.update(grads, tx.init(new['params']), new['params'])
  params = optax.apply_updates(new['params'], steps)
  stepped = transfer.keep_batch_stats({'params': params, **updates}, new)
  np.testing.assert_array_equal(params['stage1_block1']['conv1']['conv']['kernel'],
                                new['params']['stage1_block1']['conv1']['conv']['kernel'])
  assert not np.allclose(params['head']['kernel'], new['params']['head']['kernel'])
  assert stepped['batch_stats'] is new['batch_stats']
  with pytest.raises(ValueError, match="no module 'classifier'"):
    transfer.freeze_labels(new['params'], trainable=('classifier',))
