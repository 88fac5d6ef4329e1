"""Whether a workdir's checkpoints fit the state a config builds, checked before anything is
written: a run resumed (or scored) with another model, width or class count fails in one line
naming the first parameter that differs and the config fields behind it, and the old run stays
as it was."""

from typing import Any

import jax
import ml_collections

from train.core.errors import UserError

# Config fields that say how a run goes rather than what it trains: left out of the list of
# differences that could explain a different state.
_HOW_FIELDS = ('num_epochs', 'num_steps', 'log_every_steps', 'eval_every_epochs',
               'checkpoint_every_epochs', 'keep_checkpoints', 'early_stopping', 'eval')
# Fields that say what is trained on: a run resumed with other values would mix two runs even
# where the arrays happen to fit (e.g. fewer classes kept of the same dataset).
_DATA_FIELDS = ('data.dataset', 'data.classes', 'data.train_split', 'data.image_size')


def check_fits(saved_tree: Any, abstract_state: Any,
               saved_config: ml_collections.ConfigDict | None,
               config: ml_collections.ConfigDict, workdir: str, *,
               remedy: str | None = None) -> None:
  """UserError if the checkpoint's arrays (`saved_tree`, its metadata; None: no checkpoint) are
  not those of `abstract_state`, or if `saved_config` (the run's config.json, if any) trained on
  other data; the message names the config fields that differ, and `remedy` what to do (by
  default: start a new run, or resume this one with its own config)."""
  if saved_tree is None:
    return
  fields = config_differences(saved_config, config) if saved_config is not None else []
  problem = _first_difference(shapes(saved_tree), shapes(abstract_state))
  if problem is None:
    data = [f for f in fields if f.split(':')[0] in _DATA_FIELDS]
    if data:
      remedy = remedy or "give a new --workdir, or rerun with that run's data fields"
      raise UserError(f'{workdir} holds a run on other data ({"; ".join(data)}): {remedy}.')
    return
  cause = (f'; config fields that differ from that run\'s config.json: {"; ".join(fields[:4])}'
           f'{" and more" if len(fields) > 4 else ""}' if fields else '')
  remedy = remedy or ("give a new --workdir, or rerun with that run's config; a classifier can "
                      f'start from its weights with --config.transfer.init_from={workdir}')
  raise UserError(f'{workdir} holds a run of another model or dataset ({problem}{cause}): '
                  f'{remedy}.')


def shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """Each array leaf's path ('params/conv1/kernel') and shape, for a state or a checkpoint's
  metadata tree (which stores named tuples as dicts: both become the same paths)."""
  leaves = jax.tree_util.tree_flatten_with_path(
      tree, is_leaf=lambda x: hasattr(x, 'shape'))[0]
  return {'/'.join(_key_name(k) for k in path): tuple(leaf.shape)
          for path, leaf in leaves if hasattr(leaf, 'shape')}


def _key_name(key: Any) -> str:
  for attribute in ('key', 'name', 'idx'):
    if hasattr(key, attribute):
      return str(getattr(key, attribute))
  return str(key)


def _first_difference(saved: dict[str, tuple], now: dict[str, tuple]) -> str | None:
  """The first differing array, parameters before optimizer state, in words."""
  differing = sorted((path for path in saved.keys() | now.keys()
                      if saved.get(path) != now.get(path)),
                     key=lambda path: ('params' not in path.split('/'), path))
  if not differing:
    return None
  path = differing[0]
  if path not in now:
    return f'{path} {saved[path]} is in its checkpoint but not in this config\'s state'
  if path not in saved:
    return f'{path} {now[path]} of this config\'s state is not in its checkpoint'
  return f'{path} has shape {saved[path]} in its checkpoint and {now[path]} in this config'


def config_differences(saved: ml_collections.ConfigDict,
                       config: ml_collections.ConfigDict) -> list[str]:
  """'field: saved -> now' for each field that differs (leaving out `_HOW_FIELDS`)."""
  before, after = _flatten(saved.to_dict()), _flatten(config.to_dict())
  return [f'{name}: {before.get(name)!r} -> {after.get(name)!r}'
          for name in sorted(before.keys() | after.keys())
          if name.split('.')[0] not in _HOW_FIELDS and _same(before.get(name)) !=
          _same(after.get(name))]


def _flatten(tree: dict, prefix: str = '') -> dict[str, Any]:
  flat = {}
  for key, value in tree.items():
    name = f'{prefix}{key}'
    if isinstance(value, dict) and value:
      flat |= _flatten(value, name + '.')
    else:
      flat[name] = value
  return flat


def _same(value: Any) -> Any:
  """JSON turns tuples into lists; compare them alike."""
  return tuple(map(_same, value)) if isinstance(value, (list, tuple)) else value
