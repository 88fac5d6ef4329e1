"""Feature networks for FID and the Inception Score: images in [-1, 1] -> (features, logits).

Two kinds, chosen by `config.eval.feature_net`:

- 'classifier' (offline): a checkpoint of `python -m train.classify`. Features are its 'pooled'
  vector (`zoo.extract_features`), logits its `head`'s. Scores with it compare runs of this
  project on one dataset; they are not comparable with published FIDs.
- 'inception': Inception-v3 with the standard FID weights (`zoo.inception`), read from a file
  the user supplies (pytorch-fid's `pt_inception-2015-12-05` state dict saved as .npz; see
  docs/gan.md). 2048-d pool3 features and 1008 logits, as the literature's FID and IS.

The GAN works on images in [-1, 1]; the data pipeline gives [0, 1]. `to_signed` and `to_unit`
convert between the two, and `FeatureNet.apply` is the one place where an image becomes a
network's input (channels, size, normalization): real and generated images take the same path.
"""

import functools
import os
import shlex
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import zoo
from train.core import parallel, trained
from train.core.config import apply_overrides, load_config
from train.core.errors import UserError
from train.data import pipeline as input_pipeline
from zoo import weights

FEATURE_NETS = ('classifier', 'inception')
INCEPTION_SIZE = 299


def to_signed(images: jax.Array) -> jax.Array:
  """[0, 1] (the pipeline's images with normalization 'none') -> [-1, 1] (the generator's)."""
  return images * 2 - 1


def to_unit(images: jax.Array) -> jax.Array:
  """[-1, 1] -> [0, 1], for image files and feature networks."""
  return (images + 1) / 2


def quantize(images: jax.Array) -> jax.Array:
  """Images in [-1, 1] rounded to the 256 levels of an 8-bit image file."""
  return to_signed(jnp.round(jnp.clip(to_unit(images), 0, 1) * 255) / 255)


class FeatureNet:
  """A network that maps images in [-1, 1] to (features (B, D), logits (B, K)), float32.

  `apply(variables, images)` is pure (compile it inside a larger function); `variables` are
  replicated over the mesh. `description` and `resize_policy` say what a score was computed with.
  """

  def __init__(self, model: nn.Module, variables: Any, *, input_shape: tuple[int, int, int],
               preprocessing: zoo.Preprocessing, antialias: bool, description: str):
    self.variables = variables
    self.input_shape = tuple(input_shape)
    self.description = description
    self._antialias = antialias
    self.apply: Callable[[Any, jax.Array], tuple[jax.Array, jax.Array]] = functools.partial(
        _features_and_logits, model, self.input_shape, preprocessing, antialias)

  def resize_policy(self, image_shape: tuple[int, int, int]) -> str:
    """How images of `image_shape` reach the network, in words."""
    (h, w, c), (nh, nw, nc) = image_shape, self.input_shape
    channels = f', {c} channel repeated to {nc}' if c != nc else ''
    if (h, w) == (nh, nw):
      return f'{h}x{w} as the network takes them, no resize{channels}'
    kind = 'antialiased bilinear' if self._antialias and nh < h else 'bilinear'
    return f'{kind} resize {h}x{w} -> {nh}x{nw}{channels}'


def _features_and_logits(model, input_shape, preprocessing, antialias, variables, images):
  height, width, channels = input_shape
  x = to_unit(images.astype(jnp.float32))
  if x.shape[-1] != channels:
    if x.shape[-1] != 1:
      raise ValueError(f'{x.shape[-1]}-channel images for a {channels}-channel feature network')
    x = jnp.repeat(x, channels, axis=-1)  # grey -> RGB, as image libraries convert it
  if x.shape[1:3] != (height, width):
    x = jax.image.resize(x, (x.shape[0], height, width, channels), 'bilinear',
                         antialias=antialias)
  x = preprocessing(x)
  pooled = zoo.extract_features(model, variables, x)['pooled'].astype(jnp.float32)
  # The logits are the `head` Dense applied to 'pooled', as in every zoo classifier.
  head = variables['params']['head']
  return pooled, pooled @ head['kernel'].astype(jnp.float32) + head['bias']


def make_feature_net(eval_config: ml_collections.ConfigDict,
                     mesh: jax.sharding.Mesh) -> FeatureNet:
  """The feature network `config.eval` names, with its variables replicated on `mesh`."""
  if eval_config.feature_net == 'classifier':
    return classifier_net(eval_config.classifier_config, eval_config.classifier_overrides,
                          eval_config.classifier_workdir, mesh)
  if eval_config.feature_net == 'inception':
    return inception_net(eval_config.inception_weights, mesh)
  raise UserError(f'config.eval.feature_net={eval_config.feature_net!r}: use one of '
                  f'{FEATURE_NETS}')


def classify_command(config_file: str, overrides, workdir: str) -> str:
  """The command that trains the classifier `config.eval` points at."""
  flags = ''.join(' ' + shlex.quote(f'--config.{override}') for override in overrides)
  return f'python -m train.classify --config {config_file} --workdir {workdir}{flags}'


def classifier_net(config_file: str, overrides, workdir: str,
                   mesh: jax.sharding.Mesh) -> FeatureNet:
  """The best (by eval accuracy) checkpoint of a `train.classify` run as a feature network.

  `config_file` and `overrides` ('field=value' strings) are those the run was trained with: they
  give the model, its input size and its normalization.
  """
  command = classify_command(config_file, overrides, workdir)
  directory = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(directory) or not any(name.isdigit() for name in os.listdir(directory)):
    raise UserError(f'config.eval.classifier_workdir={workdir!r} holds no classifier checkpoint;'
                    f' train the feature network first: {command}')
  try:
    config = load_config(config_file)
    apply_overrides(config, [override.split('=', 1) for override in overrides])
  except UserError as e:
    raise UserError(f'config.eval.classifier_config={config_file!r} / classifier_overrides: '
                    f'{e}') from None
  classifier = trained.restore_classifier(
      config, workdir, mesh, remedy=f'set config.eval.classifier_config and classifier_overrides '
      f'to the config that run was trained with (its {trained.CONFIG_FILE}), or train a '
      f'classifier as they say: {command}')
  preprocessing = input_pipeline.input_preprocessing(config.data)
  description = (f'classifier {config.model} of {workdir} (step {classifier.step}), '
                 f'{classifier.variables["params"]["head"]["kernel"].shape[0]}-d pooled features')
  return FeatureNet(classifier.model, classifier.variables, input_shape=classifier.info.image_shape,
                    preprocessing=preprocessing, antialias=True, description=description)


def inception_net(weights_file: str, mesh: jax.sharding.Mesh) -> FeatureNet:
  """Inception-v3 with the FID weights in `weights_file` (.npz of the PyTorch state dict)."""
  how = ('convert pytorch-fid\'s pt_inception-2015-12-05-6726825d.pth to .npz as docs/gan.md '
         'shows and set --config.eval.inception_weights=PATH')
  if not weights_file:
    raise UserError(f'config.eval.inception_weights is empty: {how} (or use '
                    "--config.eval.feature_net=classifier)")
  if not os.path.isfile(weights_file):
    raise UserError(f'config.eval.inception_weights={weights_file!r}: no such file; {how}')
  with np.load(weights_file) as archive:
    state_dict = dict(archive)
  try:
    _, variables = weights.convert('inception_v3', state_dict, 'pytorch_fid')
  except ValueError as e:
    raise UserError(f'config.eval.inception_weights={weights_file!r}: {e}') from None
  variables = jax.device_put(variables, parallel.replicated(mesh))
  model = zoo.create_model('inception_v3')
  # pytorch-fid: bilinear resize without antialiasing, then [0, 1] -> [-1, 1] (mean = std = 0.5).
  return FeatureNet(model, variables, input_shape=(INCEPTION_SIZE, INCEPTION_SIZE, 3),
                    preprocessing=zoo.Preprocessing(mean=(0.5,) * 3, std=(0.5,) * 3),
                    antialias=False,
                    description=f'Inception-v3 FID weights from {weights_file}, 2048-d pool3')
