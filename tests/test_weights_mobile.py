"""MobileNet and EfficientNet: parameter counts, and weights from torchvision, timm and Keras that
match their reference models.

For every (model, source) pair the reference is built with seeded random weights (BatchNorm
statistics randomized too), saved in its source's file format (torchvision .pth, timm
.safetensors, Keras .weights.h5), loaded with `zoo.load_pretrained`, and both run in eval mode on
one random batch: the logits must agree to 1e-4 × max(1, max |logit|)
(tests/reference_weights.py). Inputs are 64×64, so every stride-2 conv sees an even input and the
padding styles (PyTorch's symmetric, TensorFlow's SAME) differ.

Parameter counts come from the variables' shapes (`jax.eval_shape`, 224×224), without
allocating them.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from reference_weights import (
  check_file,
  images,
  keras_logits,
  randomize_keras,
  randomize_torch,
  save_torch,
  torch_logits,
)

import zoo
from zoo.weights import efficientnet as efficientnet_weights
from zoo.weights import mapping
from zoo.weights import mobilenet as mobilenet_weights

SIZE = 64


# torchvision's counts at 1000 classes (BatchNorm scale and bias included, statistics not).
TORCHVISION_COUNTS = {
    'mobilenet_v2': 3_504_872, 'mobilenet_v3_small': 2_542_856, 'mobilenet_v3_large': 5_483_032,
    'efficientnet_b0': 5_288_548, 'efficientnet_b1': 7_794_184, 'efficientnet_b2': 9_109_994,
    'efficientnet_b3': 12_233_232, 'efficientnet_b4': 19_341_616, 'efficientnet_b5': 30_389_784,
    'efficientnet_b6': 43_040_704, 'efficientnet_b7': 66_347_960,
}


def _abstract_variables(name: str):
  """Shapes of the default model's variables."""
  model = zoo.create_model(name)
  return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                        jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))


@pytest.mark.parametrize('name', TORCHVISION_COUNTS)
def test_param_counts_are_torchvisions(name):
  params = _abstract_variables(name)['params']
  assert sum(math.prod(p.shape) for p in jax.tree.leaves(params)) == TORCHVISION_COUNTS[name]
  assert params['head']['kernel'].shape[-1] == 1000


def _torch_pair(tmp_path, name, source, make_reference):
  reference = randomize_torch(make_reference())
  x = images(SIZE)
  path = save_torch(reference, tmp_path / (f'{name}.pth' if source == 'torchvision'
                                           else f'{name}.safetensors'))
  model, _, _ = check_file(name, path, x, torch_logits(reference, x), f'{name} {source}')
  assert model.num_classes == 1000  # read from the head, as the default


@pytest.mark.parametrize('name', ['mobilenet_v2', 'mobilenet_v3_small', 'mobilenet_v3_large',
                                  'efficientnet_b0', 'efficientnet_b3'])
def test_torchvision(tmp_path, name):
  import torchvision
  _torch_pair(tmp_path, name, 'torchvision', getattr(torchvision.models, name))


@pytest.mark.parametrize('name, timm_name', [
    ('mobilenet_v2', 'mobilenetv2_100'), ('mobilenet_v3_small', 'mobilenetv3_small_100'),
    ('mobilenet_v3_large', 'mobilenetv3_large_100'), ('efficientnet_b0', 'efficientnet_b0')])
def test_timm(tmp_path, name, timm_name):
  import timm
  _torch_pair(tmp_path, name, 'timm', lambda: timm.create_model(timm_name))


def test_keras_mobilenet_v2(tmp_path):
  import keras
  reference = randomize_keras(keras.applications.MobileNetV2(
      weights=None, input_shape=(SIZE, SIZE, 3), classifier_activation=None))
  x = images(SIZE)
  reference.save_weights(tmp_path / 'mobilenet_v2.weights.h5')
  check_file('mobilenet_v2', tmp_path / 'mobilenet_v2.weights.h5', x, keras_logits(reference, x),
             'mobilenet_v2 keras')


@pytest.mark.parametrize('name, application', [('mobilenet_v3_small', 'MobileNetV3Small'),
                                               ('mobilenet_v3_large', 'MobileNetV3Large')])
def test_keras_mobilenet_v3(tmp_path, name, application):
  import keras
  # Keras' smallest input; without its input rescaling, so that both take the same images.
  reference = randomize_keras(getattr(keras.applications, application)(
      weights=None, input_shape=(32, 32, 3), include_preprocessing=False,
      classifier_activation=None))
  x = images(32)
  reference.save_weights(tmp_path / f'{name}.weights.h5')
  check_file(name, tmp_path / f'{name}.weights.h5', x, keras_logits(reference, x),
             f'{name} keras')


def test_keras_efficientnet_b0(tmp_path):
  import keras
  reference = randomize_keras(keras.applications.EfficientNetB0(
      weights=None, input_shape=(SIZE, SIZE, 3), classifier_activation=None))
  # The ImageNet file's normalization statistics (the variance holds the standard deviation,
  # see zoo.weights.efficientnet); zoo takes the images after the model's own preprocessing.
  normalization = reference.get_layer('normalization')
  normalization.adapt_mean.assign(np.float32(efficientnet_weights.IMAGENET_MEAN))
  normalization.adapt_variance.assign(np.float32(efficientnet_weights.IMAGENET_STD))
  normalization.finalize_state()
  raw = np.random.default_rng(0).uniform(0, 255, size=(2, SIZE, SIZE, 3)).astype(np.float32)
  preprocess = keras.Model(reference.input, normalization.output)
  reference.save_weights(tmp_path / 'efficientnet_b0.weights.h5')
  check_file('efficientnet_b0', tmp_path / 'efficientnet_b0.weights.h5',
             keras_logits(preprocess, raw), keras_logits(reference, raw), 'efficientnet_b0 keras')


def test_keras_efficientnet_refuses_other_input_normalization():
  tensors = {'normalization/mean': np.zeros(3, np.float32),
             'normalization/variance': np.ones(3, np.float32)}
  with pytest.raises(mapping.ConversionError, match="'normalization/mean' is"):
    efficientnet_weights.overrides('efficientnet_b0', 'keras', tensors)


def test_unsupported_pairs_are_conversion_errors():
  with pytest.raises(mapping.ConversionError, match='can be read from torchvision, timm, keras'):
    mobilenet_weights.rule('mobilenet_v3_large', 'pytorch_fid')
  with pytest.raises(mapping.ConversionError, match='not one of the EfficientNet models'):
    efficientnet_weights.rule('resnet50', 'torchvision')


def test_headless_file_gives_a_headless_model():
  tensors = {'features.0.0.weight': np.zeros((32, 3, 3, 3))}  # no classifier
  assert mobilenet_weights.overrides('mobilenet_v2', 'torchvision', tensors)['num_classes'] == 0
