"""MobileNet and EfficientNet: parameter counts, and weights from torchvision, timm and Keras that
match their reference models.

For every (model, source) pair the reference is built with seeded random weights (BatchNorm
statistics randomized too), its tensors are converted by the family's `overrides` and `rule`
through `map_variables`, and both run in eval mode on one random batch: the logits must agree to
1e-4 × max(1, max |logit|). Inputs are 64×64, so every stride-2 conv sees an even input and the
padding styles (PyTorch's symmetric, TensorFlow's SAME) differ.

Variable shapes do not depend on the input size, so each model's abstract variables are traced
once (`jax.eval_shape`, 224×224) for its parameter count and reused as the conversion target.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import zoo
from zoo import weights
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


@functools.cache
def _abstract_variables(name: str):
  """Shapes of the default model's variables, traced once per model for the whole file."""
  model = zoo.create_model(name)
  return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                        jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))


@pytest.mark.parametrize('name', TORCHVISION_COUNTS)
def test_param_counts_are_torchvisions(name):
  params = _abstract_variables(name)['params']
  assert sum(math.prod(p.shape) for p in jax.tree.leaves(params)) == TORCHVISION_COUNTS[name]
  assert params['head']['kernel'].shape[-1] == 1000


def _images(seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).normal(size=(2, SIZE, SIZE, 3)).astype(np.float32)


def _zoo_logits(name, source, tensors, images):
  """Converts `tensors` onto the zoo model `name` and runs it on NHWC `images`."""
  model, variables = weights.convert(name, tensors, source)
  assert model.num_classes == 1000  # read from the head, as the default
  return np.asarray(_eval_apply(model)(variables, images))


@functools.cache
def _eval_apply(model):
  # One compilation per distinct configuration (sources with the same settings share it).
  return jax.jit(functools.partial(model.apply, train=False))


def _assert_match(ours, reference):
  assert ours.shape == reference.shape
  assert reference.std() > 0.1  # the random reference is not degenerate
  diff = np.abs(ours - reference).max()
  print(f'max |diff| {diff:.3g}, max |logit| {np.abs(reference).max():.3g}')
  assert diff <= 1e-4 * max(1.0, np.abs(reference).max())


def _randomize_torch(model):
  """Random BatchNorm parameters and statistics, biases and Linear weights; eval mode."""
  import torch
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        module.weight.uniform_(0.5, 1.5)
        module.bias.uniform_(-0.5, 0.5)
        module.running_mean.uniform_(-0.5, 0.5)
        module.running_var.uniform_(0.5, 2)
      elif isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
        if isinstance(module, torch.nn.Linear):  # logits of order 1, not torchvision's 0.01
          module.weight.normal_(0, module.in_features ** -0.5)
        if module.bias is not None:
          module.bias.uniform_(-0.1, 0.1)
  return model.eval()


def _torch_pair(name, source, make_reference):
  import torch
  torch.manual_seed(0)
  reference = _randomize_torch(make_reference())
  images = _images()
  with torch.no_grad():
    expected = reference(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
  tensors = {k: v.numpy() for k, v in reference.state_dict().items()}
  _assert_match(_zoo_logits(name, source, tensors, images), expected)


@pytest.mark.parametrize('name', ['mobilenet_v2', 'mobilenet_v3_small', 'mobilenet_v3_large',
                                  'efficientnet_b0', 'efficientnet_b3'])
def test_torchvision(name):
  import torchvision
  _torch_pair(name, 'torchvision', getattr(torchvision.models, name))


@pytest.mark.parametrize('name, timm_name', [
    ('mobilenet_v2', 'mobilenetv2_100'), ('mobilenet_v3_small', 'mobilenetv3_small_100'),
    ('mobilenet_v3_large', 'mobilenetv3_large_100'), ('efficientnet_b0', 'efficientnet_b0')])
def test_timm(name, timm_name):
  import timm
  _torch_pair(name, 'timm', lambda: timm.create_model(timm_name))


def keras_tensors(model, *, legacy_names: bool) -> dict[str, np.ndarray]:
  """The flat '<layer name>/<weight name>' dict of a Keras model's weights, as a weight file
  reader gives it. `legacy_names`: Keras 2 files (Keras applications' own) call a depthwise
  kernel 'depthwise_kernel'; Keras 3 calls it 'kernel'."""
  import keras
  tensors = {}
  for layer in model.layers:
    for weight in layer.weights:
      leaf = weight.path.split('/')[-1]
      if legacy_names and isinstance(layer, keras.layers.DepthwiseConv2D) and leaf == 'kernel':
        leaf = 'depthwise_kernel'
      tensors[f'{layer.name}/{leaf}'] = np.asarray(weight.numpy())
  return tensors


def _randomize_keras(model, seed):
  rng = np.random.default_rng(seed)
  ranges = {'gamma': (0.5, 1.5), 'beta': (-0.5, 0.5), 'moving_mean': (-0.5, 0.5),
            'moving_variance': (0.5, 2.0), 'bias': (-0.1, 0.1)}
  for weight in model.weights:
    leaf = weight.path.split('/')[-1]
    if leaf in ranges:
      weight.assign(rng.uniform(*ranges[leaf], size=weight.shape).astype(np.float32))
  return model


def test_keras_mobilenet_v2():
  import keras
  keras.utils.set_random_seed(0)
  reference = _randomize_keras(keras.applications.MobileNetV2(
      weights=None, input_shape=(SIZE, SIZE, 3), classifier_activation=None), seed=0)
  images = _images()
  expected = np.asarray(reference(images, training=False))
  tensors = keras_tensors(reference, legacy_names=True)
  _assert_match(_zoo_logits('mobilenet_v2', 'keras', tensors, images), expected)


def test_keras_efficientnet_b0():
  import keras
  keras.utils.set_random_seed(0)
  reference = _randomize_keras(keras.applications.EfficientNetB0(
      weights=None, input_shape=(SIZE, SIZE, 3), classifier_activation=None), seed=0)
  # The ImageNet file's normalization statistics (the variance holds the standard deviation,
  # see zoo.weights.efficientnet); zoo takes the images after the model's own preprocessing.
  normalization = reference.get_layer('normalization')
  normalization.adapt_mean.assign(np.float32(efficientnet_weights.IMAGENET_MEAN))
  normalization.adapt_variance.assign(np.float32(efficientnet_weights.IMAGENET_STD))
  normalization.finalize_state()
  raw = np.random.default_rng(0).uniform(0, 255, size=(2, SIZE, SIZE, 3)).astype(np.float32)
  expected = np.asarray(reference(raw, training=False))
  preprocess = keras.Model(reference.input, normalization.output)
  images = np.asarray(preprocess(raw))
  tensors = keras_tensors(reference, legacy_names=False)
  assert 'normalization/variance' in tensors
  _assert_match(_zoo_logits('efficientnet_b0', 'keras', tensors, images), expected)


def test_keras_efficientnet_refuses_other_input_normalization():
  tensors = {'normalization/mean': np.zeros(3, np.float32),
             'normalization/variance': np.ones(3, np.float32)}
  with pytest.raises(mapping.ConversionError, match="'normalization/mean' is"):
    efficientnet_weights.overrides('efficientnet_b0', 'keras', tensors)


def test_unsupported_pairs_are_conversion_errors():
  with pytest.raises(mapping.ConversionError, match='can be read from torchvision, timm'):
    mobilenet_weights.rule('mobilenet_v3_large', 'keras')
  with pytest.raises(mapping.ConversionError, match='not one of the EfficientNet models'):
    efficientnet_weights.rule('resnet50', 'torchvision')


def test_headless_file_gives_a_headless_model():
  tensors = {'features.0.0.weight': np.zeros((32, 3, 3, 3))}  # no classifier
  assert mobilenet_weights.overrides('mobilenet_v2', 'torchvision', tensors)['num_classes'] == 0
