"""zoo.load_pretrained against the reference implementations, with seeded random weights.

Each reference model (torchvision, timm, Keras on the JAX backend) gets random weights and
random BatchNorm statistics, is saved in its source's own file format, loaded through
`zoo.load_pretrained`, and both run on the same random batch in eval mode: the logits must agree
to 1e-4 relative to their scale, in float32. Larger sizes of a family are checked at the level
of the mapping only (every key used, every shape right) on state dicts built on torch's 'meta'
device, which allocates nothing.
"""

import jax
import numpy as np
import pytest
from conftest import lowerings
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
from zoo import weights
from zoo.weights import mapping

torch = pytest.importorskip('torch')
torchvision = pytest.importorskip('torchvision')


def check_torch_file(name, reference, path, size, label, **load_kwargs):
  """The reference saved as `path` (unless it exists) loads and matches on a `size` batch."""
  if not path.exists():
    save_torch(reference, path)
  x = images(size)
  model, variables, _ = check_file(name, path, x, torch_logits(reference, x), label,
                                   **load_kwargs)
  return model, variables


@pytest.mark.parametrize('name', ['resnet18', 'resnet50'])
def test_torchvision_resnet(tmp_path, name):
  reference = randomize_torch(getattr(torchvision.models, name)(num_classes=10))
  path = tmp_path / f'{name}.pth'
  # A training checkpoint holding the state dict reads as well as the bare state dict.
  torch.save({'epoch': 3, 'state_dict': reference.state_dict()}, path)
  model, _ = check_torch_file(name, reference, path, 64, f'{name} torchvision .pth')
  assert model.num_classes == 10 and not model.stride_in_1x1


def test_timm_resnet_safetensors(tmp_path):
  timm = pytest.importorskip('timm')
  reference = randomize_torch(timm.create_model('resnet34', pretrained=False, num_classes=7))
  check_torch_file('resnet34', reference, tmp_path / 'resnet34.safetensors', 64,
                   'resnet34 timm .safetensors')


def test_timm_resnet_pth_reads_as_torchvisions_and_converts_identically(tmp_path):
  """timm's and torchvision's ResNets have the same keys, shapes and computation, so a timm
  `.pth` cannot be told from a torchvision one: it loads as torchvision's (bilinear resize in
  its preprocessing), with the same logits; `source='timm'` gives timm's preprocessing."""
  timm = pytest.importorskip('timm')
  reference = randomize_torch(timm.create_model('resnet18', pretrained=False, num_classes=7))
  twin = torchvision.models.resnet18(num_classes=7).eval()
  twin.load_state_dict(reference.state_dict())  # strict: the same keys and shapes
  x = images(64)
  np.testing.assert_array_equal(torch_logits(twin, x), torch_logits(reference, x))
  path = save_torch(reference, tmp_path / 'resnet18_timm.pth')
  _, variables, config = check_file('resnet18', path, x, torch_logits(reference, x),
                                    'resnet18 timm .pth')
  assert config.interpolation == 'bilinear'  # torchvision's
  _, forced, config = zoo.load_pretrained('resnet18', path, source='timm', with_config=True)
  assert config.interpolation == 'bicubic'
  jax.tree.map(np.testing.assert_array_equal, forced, variables)


def narrow_classifier(reference, dense_indices, in_features, width, classes):
  """The reference with a `width`-wide classifier (its three Linear layers at `dense_indices`),
  to keep the test small; zoo reads the width from the file."""
  sizes = ((in_features, width), (width, width), (width, classes))
  for index, (n_in, n_out) in zip(dense_indices, sizes):
    reference.classifier[index] = torch.nn.Linear(n_in, n_out)
  return randomize_torch(reference)


@pytest.mark.parametrize('name, dense_indices, channels, pool, size', [
    # 64x64 leaves a 2x2 map (VGG) or 1x1 (AlexNet) that the adaptive pool spreads to 7x7 or
    # 6x6 bins; fc1 is reordered from torch's CHW flatten to zoo's HWC.
    ('vgg11_bn', (0, 3, 6), 512, 7, 64), ('alexnet', (1, 4, 6), 256, 6, 64)])
def test_torchvision_vgg_and_alexnet(tmp_path, name, dense_indices, channels, pool, size):
  reference = narrow_classifier(getattr(torchvision.models, name)(), dense_indices,
                                channels * pool * pool, 64, 5)
  path = tmp_path / f'{name}.pth'
  torch.save(reference.state_dict(), path)
  model, _ = check_torch_file(name, reference, path, size, f'{name} torchvision .pth')
  assert (model.pool_size, model.classifier_width, model.num_classes) == ((pool, pool), 64, 5)


def test_torchvision_inception_v3(tmp_path):
  reference = torchvision.models.inception_v3(weights=None, num_classes=4, aux_logits=True,
                                              transform_input=False, init_weights=False)
  randomize_torch(reference)
  path = tmp_path / 'inception_v3.pth'
  torch.save(reference.state_dict(), path)  # with the auxiliary head, which zoo leaves out
  model, _ = check_torch_file('inception_v3', reference, path, 80,
                              'inception_v3 torchvision .pth')
  assert model.pooling == 'torchvision'


def _meta_state_dict(constructor):
  """Zero tensors shaped as the reference's state dict, without allocating them."""
  with torch.device('meta'):
    state = constructor().state_dict()
  return {k: np.broadcast_to(np.float32(0), tuple(v.shape)) for k, v in state.items()}


@pytest.mark.parametrize('name', ['resnet101', 'resnet152', 'vgg11', 'vgg13', 'vgg13_bn',
                                  'vgg16', 'vgg16_bn', 'vgg19', 'vgg19_bn'])
def test_torchvision_mapping_of_the_larger_sizes(name):
  tensors = _meta_state_dict(getattr(torchvision.models, name))
  converter = weights.family(name)
  model = zoo.create_model(name, **converter.overrides(name, 'torchvision', tensors))
  # map_variables checks every variable's shape and that every tensor is used.
  variables = mapping.map_variables(weights.abstract_variables(model, name), tensors,
                                    converter.rule(name, 'torchvision'), source='torchvision',
                                    layout=mapping.torch_layout)
  assert len(jax.tree.leaves(variables)) == sum(
      not k.endswith('num_batches_tracked') for k in tensors)


@pytest.fixture(scope='module')
def keras():
  import keras  # pylint: disable=import-outside-toplevel  (the backend is set in conftest)

  return keras


@pytest.mark.parametrize('name, application', [('resnet50', 'ResNet50'), ('vgg16', 'VGG16')])
def test_keras_both_file_formats(tmp_path, keras, name, application):
  reference = randomize_keras(getattr(keras.applications, application)(
      weights=None, input_shape=(64, 64, 3), classes=10, classifier_activation=None))
  x = images(64)
  want = keras_logits(reference, x)
  reference.save_weights(tmp_path / f'{name}.weights.h5')  # Keras 3: variables by layer index
  reference.save(tmp_path / f'{name}.h5')  # legacy: weights by layer and weight name
  for file in (f'{name}.weights.h5', f'{name}.h5'):
    model, _, config = check_file(name, tmp_path / file, x, want, f'{name} keras {file}')
    assert config.preprocessing == zoo.pretrained_config(name, 'keras').preprocessing
  if name == 'resnet50':
    assert (model.stride_in_1x1, model.conv_bias, model.bn_epsilon) == (True, True, 1.001e-5)


def test_converted_weights_round_trip_through_zoos_own_format(tmp_path):
  reference = randomize_torch(torchvision.models.resnet18(num_classes=3))
  torch.save(reference.state_dict(), tmp_path / 'resnet18.pth')
  with lowerings() as lowered:  # jnp.asarray would compile a program per array shape
    model, variables = zoo.load_pretrained('resnet18', tmp_path / 'resnet18.pth')
    zoo.save_pretrained(tmp_path / 'resnet18.msgpack', 'resnet18', {'num_classes': 3}, variables)
    again, loaded, config = zoo.load_pretrained('resnet18', tmp_path / 'resnet18.msgpack',
                                                with_config=True)
  assert not lowered
  assert again == model and config.num_classes == 3 and config.class_names() is None
  jax.tree.map(np.testing.assert_array_equal, loaded, variables)


def test_errors_are_one_line_and_name_the_problem(tmp_path):
  with pytest.raises(zoo.ConversionError, match='absent.pth: no such file'):
    zoo.load_pretrained('resnet18', tmp_path / 'absent.pth')
  (tmp_path / 'weights.txt').write_text('?')
  with pytest.raises(zoo.ConversionError, match="unknown weight format '.txt'"):
    zoo.load_pretrained('resnet18', tmp_path / 'weights.txt')
  torch.save(torchvision.models.resnet18().state_dict(), tmp_path / 'resnet18.pth')
  with pytest.raises(zoo.ConversionError) as error:
    zoo.load_pretrained('resnet50', tmp_path / 'resnet18.pth')
  message = str(error.value)
  assert '\n' not in message and message.startswith(str(tmp_path / 'resnet18.pth'))
  assert "'fc.weight' has shape (512, 1000)" in message and 'needs (2048, 1000)' in message
  with pytest.raises(zoo.ConversionError, match='no converter'):
    zoo.load_pretrained('lenet5', tmp_path / 'resnet18.pth')


def test_keras_vgg16_without_top(tmp_path, keras):
  reference = randomize_keras(keras.applications.VGG16(
      weights=None, include_top=False, pooling='avg', input_shape=(32, 32, 3)))
  x = images(32)
  reference.save_weights(tmp_path / 'vgg16_notop.weights.h5')
  model, _, _ = check_file('vgg16', tmp_path / 'vgg16_notop.weights.h5', x,
                           keras_logits(reference, x), 'vgg16 keras without top')
  assert (model.num_classes, model.classifier_width) == (0, 0)
