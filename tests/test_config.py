"""Config files, --config.field overrides, and the one-line errors a user sees."""

import subprocess
import sys

import pytest

from train.core import config as config_lib
from train.core.errors import UserError

RECIPE = 'configs/digits_cnn.py'


def _load(*overrides):
  config = config_lib.load_config(RECIPE)
  _, parsed = config_lib.split_overrides(list(overrides))
  config_lib.apply_overrides(config, parsed)
  return config


def test_overrides_are_parsed_to_the_field_type():
  config = _load('--config.batch_size=32', '--config.optim.learning_rate', '0.5',
                 '--config.data.augment.flip=true', '--config.data.image_size=12,12',
                 '--config.model=vgg11')
  assert config.batch_size == 32 and isinstance(config.batch_size, int)
  assert config.optim.learning_rate == 0.5
  assert config.data.augment.flip is True
  assert config.data.image_size == (12, 12)
  assert config.model == 'vgg11'


def test_model_kwargs_take_new_fields_as_literals():
  config = _load('--config.model_kwargs.widths=(4,8,16)', '--config.model_kwargs.stem=cifar')
  assert config.model_kwargs.to_dict() == {'widths': (4, 8, 16), 'stem': 'cifar'}


def test_other_arguments_pass_through():
  rest, overrides = config_lib.split_overrides(['--workdir', 'w', '--config.seed=3'])
  assert rest == ['--workdir', 'w'] and overrides == [('seed', '3')]


@pytest.mark.parametrize('override, message', [
    ('--config.no_such_field=1', "unknown config field 'no_such_field'"),
    ('--config.optim.learnin_rate=1', "did you mean 'learning_rate'"),
    ('--config.seed.x=1', 'config.seed is a value'),
    ('--config.batch_size=big', 'expected a number'),
    ('--config.data.augment.flip=maybe', 'expected true or false'),
])
def test_bad_overrides_name_the_field(override, message):
  with pytest.raises(UserError, match=message):
    _load(override)


def test_missing_config_file():
  with pytest.raises(UserError, match='no such config file'):
    config_lib.load_config('configs/nope.py')


def test_command_line_error_is_one_line_and_nonzero(tmp_path):
  result = subprocess.run(
      [sys.executable, '-m', 'train.classify', '--config', RECIPE, '--workdir', str(tmp_path),
       '--config.no_such_field=1'], capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      "error: unknown config field 'no_such_field'; config has: " + ', '.join(
          sorted(config_lib.load_config(RECIPE).keys()))]
