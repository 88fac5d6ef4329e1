"""Every recipe under configs/ loads, says how to run it and what to expect, and builds its
model(s) for the task its command names."""

import glob
import os
import re

import jax
import jax.numpy as jnp
import pytest

from train.core import build
from train.core import config as config_lib
from train.core.task import count_params

RECIPES = sorted(path for path in glob.glob('configs/*.py')
                 if not os.path.basename(path).startswith('__')
                 and not path.endswith(('_base.py', 'common.py')))
# The image shape of each dataset the recipes name (after the recipe's resizing, if any).
SHAPES = {'sklearn_digits': (8, 8, 1), 'sklearn_photos': (64, 64, 3), 'mnist': (28, 28, 1),
          'cifar10': (32, 32, 3), 'imagenet2012': (224, 224, 3), 'digit_scenes': (64, 64, 3),
          'oxford_iiit_pet': (128, 128, 3)}


TASKS = ('classify', 'vae', 'gan', 'pixelcnn', 'upsample', 'segment')
# The digits CNN's recipe with other classes, epochs or stages (its own `:tiny` stands for them),
# and the folder transfer recipe, whose runs need a weight file and a folder the user makes.
NO_TINY = ('configs/digits_transfer.py', 'configs/digits_tune.py', 'configs/folder_transfer.py')
KEY = jax.random.key(0)


def _docstring(path: str) -> str:
  with open(path, encoding='utf-8') as f:
    return f.read().split('"""')[1]


def _shape(config) -> tuple[int, int, int]:
  if config.data.dataset.startswith('folder:'):  # the user's photos, at the recipe's size
    return (*config.data.image_size, 3)
  channels = SHAPES[config.data.dataset][-1]
  size = tuple(config.data.image_size) or SHAPES[config.data.dataset][:2]
  return (*size, channels)


def _models(task: str, config) -> list[tuple[object, tuple[int, ...]]]:
  """(model, input shape) of each network the task trains with this config."""
  shape = _shape(config)
  if task == 'classify':
    classes = 1000 if config.data.dataset == 'imagenet2012' else 10
    return [(build.classifier(config, classes), shape)]
  if task == 'vae':
    return [(build.vae_model(config, shape), shape)]
  if task == 'pixelcnn':
    return [(build.pixelcnn_model(config, shape[-1]), shape)]
  if task == 'segment':
    model = build.create_model(config.model, 'config.model', num_classes=11,
                               **config.model_kwargs.to_dict())
    return [(model, shape)]
  if task == 'upsample':
    small = (shape[0] // config.scale, shape[1] // config.scale, shape[2])
    return [(build.super_resolution_model(config, name), small) for name in config.decoders]
  generator, discriminator = build.gan_models(config, shape)
  return [(generator, (generator.latent_dim,)), (discriminator, shape)]


def _task(path: str, doc: str) -> str:
  """The task (entry point) the recipe's command names."""
  commands = re.findall(r'python -m train\.(\w+) --config (configs/\w+\.py)', doc)
  assert commands, f'{path}: no command in its docstring'
  return next(task for task, recipe in commands if recipe == path and task in TASKS)


@pytest.mark.parametrize('path', RECIPES)
def test_recipe_gives_a_command_and_an_expected_figure_and_builds_its_models(path):
  doc = _docstring(path)
  task = _task(path, doc)
  expected = [part for part in doc.split('\n\n') if re.search(r'(?i)\b(expected|measured)\b', part)]
  assert any(re.search(r'\d', part) for part in expected), (
      f'{path}: no paragraph of its docstring gives an expected or measured figure')
  rngs = {'params': KEY, 'sample': KEY, 'dropout': KEY}  # the VAE samples even in eval
  for model, shape in _models(task, config_lib.load_config(path)):
    variables = jax.eval_shape(lambda: model.init(rngs, jnp.zeros((1, *shape)), train=False))
    assert jax.tree.leaves(variables['params']), f'{path}: {type(model).__name__} has no params'


@pytest.mark.parametrize('path', [p for p in RECIPES if p not in NO_TINY])
def test_tiny_variant_is_a_short_run_of_small_models_that_compute(path):
  config = config_lib.load_config(f'{path}:tiny')
  assert 0 < config.num_steps <= 4 and config.batch_size <= 32
  rngs = {'params': KEY, 'sample': KEY, 'dropout': KEY}
  for model, shape in _models(_task(path, _docstring(path)), config):
    out, variables = jax.eval_shape(
        lambda: model.init_with_output(rngs, jnp.zeros((2, *shape)), train=False))
    assert count_params(variables['params']) < 300_000, f'{path}:tiny is not tiny'
    assert jax.tree.leaves(out)[0].shape[0] == 2
