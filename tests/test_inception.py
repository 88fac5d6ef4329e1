"""zoo.inception and its weight loader, on a PyTorch-layout state dict file the test makes."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from train.core import parallel
from train.core.errors import UserError
from train.metrics import feature_nets
from zoo import inception

# Keys and PyTorch shapes of pytorch-fid's FIDInceptionV3 state dict (torchvision's layers).
TORCH_SHAPES = {
    'Conv2d_1a_3x3.conv.weight': (32, 3, 3, 3),
    'Conv2d_4a_3x3.bn.running_var': (192,),
    'Mixed_5b.branch_pool.conv.weight': (32, 192, 1, 1),
    'Mixed_5d.branch5x5_2.conv.weight': (64, 48, 5, 5),
    'Mixed_6a.branch3x3.conv.weight': (384, 288, 3, 3),
    'Mixed_6b.branch7x7_2.conv.weight': (128, 128, 1, 7),
    'Mixed_6e.branch7x7dbl_5.conv.weight': (192, 192, 1, 7),
    'Mixed_7a.branch7x7x3_4.conv.weight': (192, 192, 3, 3),
    'Mixed_7c.branch3x3dbl_3b.conv.weight': (384, 384, 3, 1),
    'Mixed_7c.branch_pool.bn.weight': (192,),
    'fc.weight': (1008, 2048),
    'fc.bias': (1008,),
}


@functools.cache
def _abstract_variables():
  model = zoo.create_model('inception_v3')
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 299, 299, 3)),
                                           train=False))


def test_parameter_count_and_feature_shapes_are_torchvisions():
  variables = _abstract_variables()
  # torchvision's inception_v3 without the auxiliary head: 23,834,568 at 1000 classes.
  assert sum(math.prod(p.shape) for p in jax.tree.leaves(variables['params'])) == (
      23_834_568 - 2049 * 1000 + 2049 * 1008)
  model = zoo.create_model('inception_v3')
  x = jax.ShapeDtypeStruct((2, 299, 299, 3), jnp.float32)
  features = jax.eval_shape(functools.partial(zoo.extract_features, model), variables, x)
  assert {k: v.shape[1:] for k, v in features.items()} == {
      'stage1': (147, 147, 64), 'stage2': (71, 71, 192), 'stage3': (35, 35, 288),
      'stage4': (17, 17, 768), 'stage5': (8, 8, 2048), 'pooled': (2048,)}


@functools.cache
def _torch_state_dict(seed=0):
  """Random values for every variable, named and laid out as the PyTorch state dict (shared:
  copy before changing it)."""
  rng = np.random.default_rng(seed)
  state_dict = {}
  variables = _abstract_variables()
  for collection in ('params', 'batch_stats'):
    for path, leaf in jax.tree_util.tree_leaves_with_path(variables[collection]):
      path = tuple(k.key for k in path)
      shape = leaf.shape
      if path[-1] == 'kernel':  # flax HWIO / (in, out) -> PyTorch OIHW / (out, in)
        shape = (shape[3], shape[2], shape[0], shape[1]) if len(shape) == 4 else shape[::-1]
      state_dict[inception.torch_key(collection, path)] = rng.normal(size=shape).astype(
          np.float32)
  for name in list(state_dict):
    if name.endswith('running_var'):  # PyTorch keeps a counter beside the statistics
      state_dict[name.replace('running_var', 'num_batches_tracked')] = np.array(0)
  return state_dict


def test_a_state_dict_file_loads_into_the_flax_layout(tmp_path):
  state_dict = _torch_state_dict()
  assert len(state_dict) == 94 * 6 + 2  # 94 conv+BN layers (5 tensors and a counter), fc
  for key, shape in TORCH_SHAPES.items():
    assert state_dict[key].shape == shape
  path = str(tmp_path / 'pt_inception.npz')
  np.savez(path, **state_dict)

  net = feature_nets.inception_net(path, parallel.make_mesh())
  params, stats = net.variables['params'], net.variables['batch_stats']
  torch_w = state_dict['Mixed_6b.branch7x7_2.conv.weight']  # (out, in, 1, 7)
  flax_w = np.asarray(params['Mixed_6b']['branch7x7_2']['conv']['kernel'])  # (1, 7, in, out)
  assert flax_w.shape == (1, 7, 128, 128)
  np.testing.assert_array_equal(flax_w[0, 5, 3, 9], torch_w[9, 3, 0, 5])
  np.testing.assert_array_equal(params['head']['kernel'], state_dict['fc.weight'].T)
  np.testing.assert_array_equal(params['Mixed_7c']['branch_pool']['bn']['scale'],
                                state_dict['Mixed_7c.branch_pool.bn.weight'])
  np.testing.assert_array_equal(stats['Conv2d_4a_3x3']['bn']['var'],
                                state_dict['Conv2d_4a_3x3.bn.running_var'])
  # GAN images of any size and channel count come out as 2048-d features and 1008 logits.
  images = jax.ShapeDtypeStruct((3, 32, 32, 1), jnp.float32)
  features, logits = jax.eval_shape(net.apply, net.variables, images)
  assert features.shape == (3, 2048) and logits.shape == (3, 1008)
  assert net.resize_policy((32, 32, 1)) == (
      'bilinear resize 32x32 -> 299x299, 1 channel repeated to 3')


def test_the_model_runs_on_loaded_weights():
  variables = inception.load_torch_state_dict(
      {k: v * 0.05 for k, v in _torch_state_dict(seed=1).items()})
  variables['batch_stats'] = jax.tree.map(jnp.abs, variables['batch_stats'])  # variances >= 0
  model = zoo.create_model('inception_v3')
  x = jax.random.uniform(jax.random.key(0), (1, 75, 75, 3), minval=-1, maxval=1)
  features = jax.jit(functools.partial(zoo.extract_features, model))(variables, x)
  assert features['pooled'].shape == (1, 2048)
  assert np.isfinite(features['pooled']).all() and (features['pooled'] >= 0).all()


def test_a_wrong_file_is_a_user_error_naming_what_is_wrong(tmp_path):
  state_dict = dict(_torch_state_dict())
  del state_dict['fc.bias']
  state_dict['Mixed_5b.branch1x1.conv.weight'] = np.zeros((64, 192, 3, 3), np.float32)
  state_dict['AuxLogits.fc.weight'] = np.zeros((1000, 768), np.float32)
  path = str(tmp_path / 'wrong.npz')
  np.savez(path, **state_dict)
  with pytest.raises(UserError) as error:
    feature_nets.inception_net(path, parallel.make_mesh())
  message = str(error.value)
  assert "missing 'fc.bias'" in message
  assert "unexpected 'AuxLogits.fc.weight'" in message
  assert "'Mixed_5b.branch1x1.conv.weight' has shape (64, 192, 3, 3)" in message
  with pytest.raises(UserError, match='no such file'):
    feature_nets.inception_net(str(tmp_path / 'absent.npz'), parallel.make_mesh())
