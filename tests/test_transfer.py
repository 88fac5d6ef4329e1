"""Transfer learning in train.classify: loading matching weights, a frozen backbone, fine-tuning."""

import functools

import jax
import numpy as np
import pytest

from configs import digits_cnn
from train import classify
from train.core import build, parallel, trained, transfer
from train.core.errors import UserError
from train.core.state import create_train_state, init_on_mesh
from train.core.task import Length


def _config(data_dir, steps=3, **transfer_fields):
  """A tiny ResNet (with BatchNorm) on 8x8 digits, for `steps` steps of 32."""
  config = digits_cnn.get_config()
  config.model = 'resnet20'
  config.model_kwargs = {'stage_sizes': (1, 1, 1), 'widths': (4, 8, 16)}
  config.data.data_dir = data_dir
  config.data.image_size = (8, 8)
  config.data.shards = 1  # Each training stream costs a tf.data trace...
  config.data.augment.update(rotation=0.0, shift=0.0)  # ...and so does the affine warp.
  config.batch_size = 32
  config.eval_batch_size = 128
  config.num_steps = steps
  config.optim.schedule = 'constant'
  config.optim.warmup_epochs = 0.0
  config.transfer.update(transfer_fields)
  return config


@pytest.fixture(scope='session')
def transfer_runs(tmp_path_factory, data_dir):
  """Workdirs: 'source' (digits 0-4), 'features' (its head trained on 5-9), 'finetune'."""
  tmp = tmp_path_factory.mktemp('transfer')
  workdirs = {name: str(tmp / name) for name in ('source', 'features', 'finetune')}
  config = _config(data_dir)
  config.data.classes = (0, 1, 2, 3, 4)
  classify.train_and_evaluate(config, workdirs['source'])
  config = _config(data_dir, init_from=workdirs['source'], freeze_backbone=True)
  config.data.classes = (5, 6, 7, 8, 9)
  classify.train_and_evaluate(config, workdirs['features'])
  config = _config(data_dir, init_from=workdirs['features'])
  config.data.classes = (5, 6, 7, 8, 9)
  config.optim.learning_rate = 1e-4
  classify.train_and_evaluate(config, workdirs['finetune'])
  return {name: trained.load_classifier(workdir) for name, workdir in workdirs.items()}


def _flat(classifier, collection):
  return {'/'.join(k.key for k in path): np.asarray(leaf) for path, leaf in
          jax.tree_util.tree_leaves_with_path(classifier.variables[collection])}


def _fresh_state(config, num_classes):
  model = build.classifier(config, num_classes)
  tx = build.optimizer(config.optim, Length(1, 1),
                          head_only=config.transfer.freeze_backbone)[0]
  mesh = parallel.make_mesh()
  return init_on_mesh(functools.partial(create_train_state, model, tx, input_shape=(8, 8, 1)),
                      jax.random.key(1), parallel.replicated(mesh))[0]


def test_init_from_loads_every_matching_array_but_a_new_head(transfer_runs):
  source = transfer_runs['source']
  fresh = _fresh_state(source.config, num_classes=3)
  state, report = transfer.initialize(fresh, source.variables, 'SRC')
  expected = jax.tree.map(np.asarray, source.variables)
  for name in expected['params']:
    got, want = state.params[name], expected['params'][name]
    if name == 'head':  # Three classes, not ten: the fresh head stays.
      jax.tree.map(np.testing.assert_array_equal, got, fresh.params['head'])
      assert got['kernel'].shape == (16, 3)
    else:
      jax.tree.map(np.testing.assert_array_equal, got, want)
  jax.tree.map(np.testing.assert_array_equal, state.batch_stats, expected['batch_stats'])
  num_arrays = len(jax.tree.leaves(expected))
  assert report == (f'Initialized {num_arrays - 2} of {num_arrays} arrays from SRC; not loaded: '
                    'new head (10 -> 3 classes): params/head/bias, params/head/kernel')

  same_classes, report = transfer.initialize(_fresh_state(source.config, 10), source.variables,
                                             'SRC')
  jax.tree.map(np.testing.assert_array_equal, same_classes.params, expected['params'])
  assert report == f'Initialized {num_arrays} of {num_arrays} arrays from SRC'


def test_a_frozen_backbone_trains_only_the_head(transfer_runs):
  source, features = transfer_runs['source'], transfer_runs['features']
  assert features.step == 3
  for collection in ('params', 'batch_stats'):
    before, after = _flat(source, collection), _flat(features, collection)
    assert before.keys() == after.keys()
    for path in before:
      if path.startswith('head/'):
        assert not np.allclose(before[path], after[path]), path
      else:
        np.testing.assert_array_equal(before[path], after[path], err_msg=path)


def test_fine_tuning_changes_every_array(transfer_runs):
  features, finetune = transfer_runs['features'], transfer_runs['finetune']
  for collection in ('params', 'batch_stats'):
    before, after = _flat(features, collection), _flat(finetune, collection)
    for path in before:
      assert not np.array_equal(before[path], after[path]), path


def test_a_missing_source_or_head_is_a_user_error(data_dir, tmp_path):
  config = _config(data_dir, init_from=str(tmp_path / 'missing'))
  with pytest.raises(UserError, match='missing.*does not exist'):
    classify.train_and_evaluate(config, str(tmp_path / 'run'))
  with pytest.raises(UserError, match="named 'head'"):
    build.optimizer(_config(data_dir).optim, Length(1, 1), head_only=True)[0].init(
        {'conv': {'kernel': np.zeros(3)}})
