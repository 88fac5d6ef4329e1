"""A classifier trained by `python -m train.classify`, loaded back from its workdir.

The run writes its resolved config to WORKDIR/config.json; from it the model and the shape of its
train state are rebuilt, and the best checkpoint (by eval accuracy) is restored into that shape.
"""

import functools
import json
import os
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import ml_collections
from etils import epy

from train.core import build, compat, parallel
from train.core.checkpoint import Checkpointer
from train.core.errors import UserError
from train.core.state import abstract_on_mesh, create_train_state
from train.core.task import Length

with epy.lazy_imports():  # TensorFlow only once a pipeline is used
  from train.data import pipeline as input_pipeline

CONFIG_FILE = 'config.json'


class TrainedClassifier(NamedTuple):
  model: nn.Module
  variables: dict[str, Any]  # {'params', 'batch_stats'}, replicated over the mesh.
  config: ml_collections.ConfigDict
  info: 'input_pipeline.DatasetInfo'
  step: int  # Of the restored checkpoint.


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes WORKDIR/config.json (process 0), which `load_classifier` rebuilds the model from."""
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, CONFIG_FILE), 'w', encoding='utf-8') as f:
      f.write(config.to_json(indent=2))


def saved_config(workdir: str) -> ml_collections.ConfigDict | None:
  """The config.json of the run in `workdir`, or None if it has none (or an unreadable one)."""
  try:
    return load_config(workdir)
  except UserError:
    return None


def load_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a `train.classify` run in `workdir` was trained with."""
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.isdir(workdir):
    raise UserError(f'workdir {workdir!r} does not exist: give the --workdir of a '
                    'python -m train.classify run.')
  if not os.path.isfile(path):
    raise UserError(f'{path} not found: {workdir!r} is not the workdir of a train.classify run '
                    '(each run writes its config there when it starts).')
  try:
    with open(path, encoding='utf-8') as f:
      return ml_collections.ConfigDict(_tuples(json.load(f)))
  except ValueError as e:
    raise UserError(f'{path} is not a readable config ({e}): restore it, or train again in a '
                    'new --workdir.') from None


def _tuples(tree: Any) -> Any:
  """JSON lists back to the tuples the config had (image sizes, model fields)."""
  if isinstance(tree, dict):
    return {key: _tuples(value) for key, value in tree.items()}
  if isinstance(tree, list):
    return tuple(_tuples(value) for value in tree)
  return tree


def restore_classifier(config: ml_collections.ConfigDict, workdir: str,
                       mesh: jax.sharding.Mesh | None = None, *,
                       remedy: str | None = None) -> TrainedClassifier:
  """The best checkpoint of the run `config` trained in `workdir`, replicated over `mesh`.
  `remedy` says what to do when `config` does not build that run's model (`compat.check_fits`)."""
  directory = os.path.join(workdir, 'checkpoints')
  if not os.path.isdir(directory) or not any(name.isdigit() for name in os.listdir(directory)):
    raise UserError(f'{workdir!r} holds no checkpoint yet: train it first with '
                    f'python -m train.classify --workdir {workdir} ...')
  mesh = mesh or parallel.make_mesh()
  info = input_pipeline.get_dataset_info(config.data)
  model = build.classifier(config, info.num_classes)
  # The optimizer only shapes the checkpoint's tree; its hyperparameters do not matter here.
  tx, _ = build.optimizer(config.optim, Length(1, 1), head_only=config.transfer.freeze_backbone)
  abstract = abstract_on_mesh(
      functools.partial(create_train_state, model, tx, input_shape=info.image_shape),
      jax.random.key(0), parallel.replicated(mesh))
  checkpointer = Checkpointer(workdir, keep=1, best_metric='accuracy', read_only=True)
  try:
    compat.check_fits(checkpointer.saved_tree(), abstract, saved_config(workdir), config, workdir,
                      remedy=remedy)
    state, _, step = checkpointer.restore_for_use(abstract, 'best')
  finally:
    checkpointer.close()
  return TrainedClassifier(model, {'params': state.params, 'batch_stats': state.batch_stats},
                           config, info, step)


def load_classifier(workdir: str, mesh: jax.sharding.Mesh | None = None) -> TrainedClassifier:
  """The best checkpoint of the `train.classify` run in `workdir`, with its model and config."""
  return restore_classifier(load_config(workdir), workdir, mesh)
