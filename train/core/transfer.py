"""Transfer learning for `train.classify` (`config.transfer`).

`pretrained=NAME:FILE` starts from a weight file converted onto zoo model NAME
(`zoo.load_pretrained`), as `init_from` does from a run.

`init_from=WORKDIR` starts from that run's best checkpoint: every parameter and BatchNorm
statistic whose path and shape match is copied, except the classifier `head` when the number of
classes differs (it keeps its fresh initialization). `freeze_backbone=True` then trains the
`head` alone (feature extraction): the other parameters get zero updates and the BatchNorm
running statistics keep their loaded values. During training steps BatchNorm still normalizes
with each batch's own statistics, as any train-mode step does.
"""

from typing import Any

import jax
from flax import traverse_util

import zoo
from train.core.errors import UserError
from zoo.transfer import HEAD, transfer_variables


def initialize(state: Any, source_variables: dict[str, Any], source: str) -> tuple[Any, str]:
  """`state` with the matching parameters and batch_stats of `source_variables`; and a report.

  `source` names where they come from, for the report (one line: what was loaded, what was not).
  The optimizer state is kept: its initial value does not depend on the parameters' values.
  """
  target = {'params': state.params, 'batch_stats': state.batch_stats}
  classes = (_num_classes(source_variables), _num_classes(target))
  merged, skipped = transfer_variables(target, source_variables,
                                       exclude=(HEAD,) if classes[0] != classes[1] else ())
  if 'excluded' in skipped:
    skipped = {f'new head ({classes[0]} -> {classes[1]} classes)': skipped.pop('excluded'),
               **skipped}
  total = len(traverse_util.flatten_dict(target))
  loaded = total - sum(map(len, skipped.values()))
  if not loaded:
    raise UserError(f'config.transfer: no parameter of {source} matches this model in path and '
                    f'shape; start from weights of the same architecture.')
  report = f'Initialized {loaded} of {total} arrays from {source}'
  if skipped:
    report += '; not loaded: ' + '; '.join(f'{reason}: {", ".join(paths)}'
                                           for reason, paths in skipped.items())
  # On the target's devices and shardings (the source may sit on one device only).
  merged = jax.tree.map(lambda new, old: jax.device_put(new, old.sharding), merged, target)
  return state.replace(params=merged['params'],
                       batch_stats=merged.get('batch_stats', state.batch_stats)), report


def load_pretrained(spec: str) -> dict[str, Any]:
  """The variables of `config.transfer.pretrained='NAME:FILE'`: FILE's weights converted onto
  zoo model NAME (`zoo.load_pretrained`; torchvision, timm, Keras or zoo files)."""
  name, _, path = spec.partition(':')
  if not name or not path:
    raise UserError(f'config.transfer.pretrained={spec!r}: expected NAME:FILE, e.g. '
                    f'resnet50:/path/resnet50.pth.')
  try:
    _, variables = zoo.load_pretrained(name, path)
  except ValueError as e:  # ConversionError, or an unknown model name.
    raise UserError(f'config.transfer.pretrained={spec!r}: {e}') from None
  return variables


def _num_classes(variables: dict[str, Any]) -> int | None:
  bias = variables['params'].get(HEAD, {}).get('bias')
  return None if bias is None else bias.shape[-1]
