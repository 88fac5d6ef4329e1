"""Every recipe under configs/ loads, names a registered model, and that model builds."""

import glob
import os

import jax
import jax.numpy as jnp
import pytest

import zoo
from train import config as config_lib
from train.core import build

CLASSIFY_RECIPES = ['configs/digits_cnn.py', 'configs/mnist_cnn.py',
                    'configs/cifar10_resnet.py:20', 'configs/cifar10_resnet.py:56',
                    'configs/cifar10_vgg16_bn.py', 'configs/imagenet_resnet50.py']
INPUT_SHAPES = {'sklearn_digits': (16, 16, 1), 'mnist': (28, 28, 1), 'cifar10': (32, 32, 3),
                'imagenet2012': (224, 224, 3)}


def test_every_recipe_has_a_docstring_with_its_command():
  for path in glob.glob('configs/*.py'):
    name = os.path.basename(path)
    if name.startswith('__') or name.endswith('_base.py'):
      continue
    recipe = config_lib.load_config(path)  # imports and calls get_config()
    assert recipe is not None
    with open(path, encoding='utf-8') as f:
      assert 'python -m train.' in f.read().split('"""')[1], f'{path}: no command in docstring'


@pytest.mark.parametrize('spec', CLASSIFY_RECIPES)
def test_classification_recipe_builds_its_model(spec):
  config = config_lib.load_config(spec)
  num_classes = 1000 if config.data.dataset == 'imagenet2012' else 10
  model = build.classifier(config, num_classes)
  shape = INPUT_SHAPES[config.data.dataset]
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *shape)),
                                                train=False))
  logits = jax.eval_shape(lambda v: model.apply(v, jnp.zeros((2, *shape)), train=False),
                          variables)
  assert logits.shape == (2, num_classes)
  assert config.model in zoo.list_models()
