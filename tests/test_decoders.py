"""Tests for zoo.decoders: shapes, the shared interface, and SuperResolution."""

import dataclasses
import inspect

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from zoo import decoders

KEY = jax.random.key(0)


def _output_shape(module, x_shape, **kwargs):
  """Output shape of `module` in training mode, traced without running."""
  def run(x):
    variables = module.init(KEY, x, train=False)
    return module.apply(variables, x, train=True, mutable=['batch_stats'])[0]
  return jax.eval_shape(run, jax.ShapeDtypeStruct(x_shape, jnp.float32)).shape


@pytest.mark.parametrize('name', ['transpose', 'resize'])
@pytest.mark.parametrize('features, factor', [((), 2), ((8,), 4), ((8, 4), 8)])
@pytest.mark.parametrize('hw', [(1, 1), (3, 5), (7, 7)])
def test_decoder_output_shape(name, features, factor, hw):
  decoder = decoders.get_decoder(name)(features=features, out_channels=3)
  h, w = hw
  assert _output_shape(decoder, (2, h, w, 6)) == (2, factor * h, factor * w, 3)


def test_decoders_share_interface():
  transpose, resize = decoders.TransposeConvDecoder, decoders.ResizeConvDecoder
  fields = lambda cls: {f.name for f in dataclasses.fields(cls) if f.init}
  # The resize decoder adds only its resize method; every other field is common.
  assert fields(resize) - fields(transpose) == {'resize_method'}
  assert fields(transpose) <= fields(resize)
  assert inspect.signature(transpose.__call__) == inspect.signature(resize.__call__)
  kwargs = dict(features=(4,), out_channels=2, kernel_size=(3, 3), batch_norm=False,
                activation=nn.gelu, dtype=jnp.float32, param_dtype=jnp.float32)
  x = jnp.ones((1, 4, 4, 3))
  for cls in (transpose, resize):
    module = cls(**kwargs)
    out = module.apply(module.init(KEY, x, train=False), x, train=False)
    chex.assert_shape(out, (1, 16, 16, 2))


@pytest.mark.parametrize('name', ['transpose', 'resize'])
def test_decoder_batchnorm_and_linear_output(name):
  x = jax.random.normal(KEY, (4, 3, 3, 5))
  with_bn = decoders.get_decoder(name)(features=(6, 6), out_channels=2)
  variables = with_bn.init(KEY, x, train=False)
  assert set(variables['batch_stats']) == {'bn0', 'bn1'}  # hidden stages only
  assert 'bias' not in variables['params']['stage0']  # cancelled by BatchNorm
  out, updates = with_bn.apply(variables, x, train=True, mutable=['batch_stats'])
  assert not jax.tree.all(jax.tree.map(jnp.array_equal, updates['batch_stats'],
                                       variables['batch_stats']))
  # No activation after the output layer: a ReLU decoder still gives negative outputs.
  assert (out < 0).any()
  without_bn = decoders.get_decoder(name)(features=(6,), out_channels=2, batch_norm=False)
  assert 'batch_stats' not in without_bn.init(KEY, x, train=False)


def _constant_response(decoder):
  """Output of a one-stage decoder with all-ones kernels on a constant input."""
  x = jnp.ones((1, 6, 6, 1))
  return np.asarray(decoder.apply(decoder.init(KEY, x, train=False), x, train=False))[0, ..., 0]


def test_resize_avoids_checkerboard():
  """Odena et al. 2016: a stride-2 transposed 3x3 kernel overlaps unevenly, so a constant input
  gives a checkerboard; the resize-convolution and an even 4x4 kernel give a constant interior."""
  ones = nn.initializers.ones
  resize = _constant_response(decoders.ResizeConvDecoder((), 1, kernel_init=ones))
  even = _constant_response(decoders.TransposeConvDecoder((), 1, kernel_init=ones))
  odd = _constant_response(
      decoders.TransposeConvDecoder((), 1, kernel_size=(3, 3), kernel_init=ones))
  interior = (slice(2, -2), slice(2, -2))
  assert np.ptp(resize[interior]) == 0
  assert np.ptp(even[interior]) == 0
  assert np.ptp(odd[interior]) > 0


@pytest.mark.parametrize('bn', [False, True])
def test_conv_encoder(bn):
  encoder = decoders.ConvEncoder(features=(4, 8, 16), batch_norm=bn)
  assert _output_shape(encoder, (2, 16, 24, 3)) == (2, 2, 3, 16)
  variables = jax.eval_shape(lambda: encoder.init(KEY, jnp.ones((2, 16, 24, 3)), train=False))
  # Never BatchNorm on the first stage, which sees raw pixels (Radford et al. 2015).
  assert set(variables.get('batch_stats', {})) == ({'bn1', 'bn2'} if bn else set())
  assert 'bias' in variables['params']['stage0']


@pytest.mark.parametrize('name', ['sr_transpose', 'sr_resize'])
@pytest.mark.parametrize('scale', [2, 4])
def test_super_resolution(name, scale):
  model = zoo.create_model(name, scale=scale, features=8, num_convs=2)
  assert model.decoder == name.removeprefix('sr_')
  x = jax.random.uniform(KEY, (2, 5, 6, 3))
  variables = model.init(KEY, x, train=False)
  y = model.apply(variables, x, train=True)
  chex.assert_shape(y, (2, 5 * scale, 6 * scale, 3))
  chex.assert_tree_all_finite(y)


def test_super_resolution_rejects_bad_scale():
  with pytest.raises(ValueError, match='power of two'):
    decoders.SuperResolution(scale=3).init(KEY, jnp.ones((1, 4, 4, 3)), train=False)


def test_unknown_decoder():
  with pytest.raises(ValueError, match='unknown decoder'):
    decoders.get_decoder('pixelshuffle')
