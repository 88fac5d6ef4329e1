"""Transfer learning for `train.classify` (`config.transfer`).

`pretrained=NAME:FILE` starts from a weight file converted onto zoo model NAME
(`zoo.load_pretrained`), as `init_from` does from a run. The run's input then follows the
weights' config (`follow_pretrained_input`): their mean/std and channel order in training and
evaluation, and their resize of the shorter side and centre crop.

`init_from=WORKDIR` starts from that run's best checkpoint: every parameter and BatchNorm
statistic whose path and shape match is copied, except the classifier `head` when the number of
classes differs (it keeps its fresh initialization). `freeze_backbone=True` then trains the
`head` alone (feature extraction): the other parameters get zero updates and the BatchNorm
running statistics keep their loaded values. During training steps BatchNorm still normalizes
with each batch's own statistics, as any train-mode step does.
"""

import copy
import math
from typing import Any, NamedTuple

import jax
import ml_collections
from flax import traverse_util

import zoo
from train.core import trained
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


class Pretrained(NamedTuple):
  """A weight file converted onto a zoo model: its variables and the input they expect."""
  variables: dict[str, Any]
  config: zoo.PretrainedConfig


def load_pretrained(spec: str) -> Pretrained:
  """The weights of `config.transfer.pretrained='NAME:FILE'`: FILE converted onto zoo model
  NAME (`zoo.load_pretrained`; torchvision, timm, Keras or zoo files)."""
  name, _, path = spec.partition(':')
  if not name or not path:
    raise UserError(f'config.transfer.pretrained={spec!r}: expected NAME:FILE, e.g. '
                    f'resnet50:/path/resnet50.pth.')
  try:
    _, variables, config = zoo.load_pretrained(name, path, with_config=True)
  except ValueError as e:  # ConversionError, or an unknown model name.
    raise UserError(f'config.transfer.pretrained={spec!r}: {e}') from None
  return Pretrained(variables, config)


# The `config.data` fields that say how images are preprocessed for pretrained weights.
INPUT_FIELDS = ('normalization', 'mean', 'std', 'bgr', 'crop_fraction', 'interpolation')


def follow_pretrained_input(config: ml_collections.ConfigDict, weights: zoo.PretrainedConfig
                            ) -> tuple[ml_collections.ConfigDict, str]:
  """A copy of `config` whose `data` preprocesses as `weights` expect; and a report line.

  Training and evaluation normalize by the weights' mean/std in their channel order, and bring
  images to `data.image_size` as the weights' eval transform does: the shorter side resized to
  `image_size / crop_pct` with their interpolation, the centre cropped. The size is the run's
  own `data.image_size`, or the weights' input size when that is (). The run's `config.json`
  records these fields, so `train.predict --workdir` preprocesses the same way.
  """
  config = copy.deepcopy(config)
  preprocessing = weights.preprocessing
  # data.mean/std are in RGB order; `bgr` reverses the channels after normalizing.
  order = slice(None, None, -1) if preprocessing.bgr else slice(None)
  config.data.update(normalization='per_channel', mean=tuple(preprocessing.mean[order]),
                     std=tuple(preprocessing.std[order]), bgr=preprocessing.bgr,
                     crop_fraction=weights.crop_pct, interpolation=weights.interpolation,
                     image_size=tuple(config.data.image_size) or weights.input_size[:2])
  size = 'x'.join(map(str, weights.input_size[:2]))
  return config, (f'Input as the pretrained weights expect ({size} in their training): '
                  f'{_describe(config.data)}')


def follow_source_input(config: ml_collections.ConfigDict, source_dir: str
                        ) -> tuple[ml_collections.ConfigDict, str]:
  """`config` (a copy) preprocessing as the run in `source_dir` did, if that run started from
  pretrained weights (a fine-tuning run after a frozen one); otherwise `config` as it is.
  A report line, or ''."""
  source = trained.saved_config(source_dir)
  if source is None or not source.transfer.get('pretrained'):
    return config, ''
  config = copy.deepcopy(config)
  config.data.update({field: source.data[field] for field in INPUT_FIELDS})
  return config, f'Input as {source_dir} preprocessed it: {_describe(config.data)}'


def _describe(data: ml_collections.ConfigDict) -> str:
  height, width = data.image_size
  return (f'shorter side resized to {math.floor(min(height, width) / data.crop_fraction)} '
          f'({data.interpolation}), centre {height}x{width} cropped, normalized by mean '
          f'{_rounded(data.mean)} and std {_rounded(data.std)}'
          f'{", then channels reversed to BGR" if data.bgr else ""}')


def _rounded(values: tuple[float, ...]) -> str:
  return '(' + ', '.join(f'{v:.4g}' for v in values) + ')'


def _num_classes(variables: dict[str, Any]) -> int | None:
  bias = variables['params'].get(HEAD, {}).get('bias')
  return None if bias is None else bias.shape[-1]
