"""The Optuna study of a search: its storage, sampler and pruner, and the checks on rerunning.

The default storage is an SQLite file in the workdir, so running the same command again
continues the study. Running trials send a heartbeat; a trial whose process died (no heartbeat
for `grace_seconds`) is marked failed when a worker next starts a trial, and Optuna's
RetryHeartbeatStaleTrialCallback enqueues it again with the same parameters.
"""

import dataclasses
import os
import warnings

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

from train.core.errors import UserError
from train.tuning.space import Space

MODES = ('trials', 'population')
SAMPLERS = ('grid', 'random', 'bayes')
PRUNERS = ('none', 'median', 'hyperband')
# States that count towards --tune.trials: failed trials are rerun instead.
COUNTED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
           optuna.trial.TrialState.RUNNING)




def _retry(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
  """Enqueues a failed trial again with its parameters and user attributes (its workdir), twice
  at most."""
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', optuna.exceptions.ExperimentalWarning)
    callback = RetryHeartbeatStaleTrialCallback(max_retry=2)
  callback(study, trial)


@dataclasses.dataclass(frozen=True)
class Options:
  """The --tune.* flags."""
  task: str = 'classify'  # the train.<task> entry point each trial runs
  # 'trials': one run per trial; 'population': `population` classifier trials at a time,
  # trained as one program (train/tuning/population_study.py).
  mode: str = 'trials'
  population: int = 4
  sampler: str = 'bayes'
  trials: int = 20
  pruner: str = 'median'
  storage: str = ''  # an Optuna database URL; '' is sqlite:///WORKDIR/study.db
  study: str = ''  # the study's name in the storage; '' is the recipe's file name
  seed: int = -1  # of the sampler; -1 draws one (workers sharing a study must not repeat)
  heartbeat_seconds: int = 10
  grace_seconds: int = 60  # no heartbeat for this long: the trial's process is dead


def check_options(options: Options, space: Space) -> None:
  if options.mode not in MODES:
    raise UserError(f'--tune.mode={options.mode!r}: use one of {", ".join(MODES)}.')
  if options.population < 1:
    raise UserError(f'--tune.population={options.population}: train at least one trial at a '
                    'time.')
  if options.sampler not in SAMPLERS:
    raise UserError(f'--tune.sampler={options.sampler!r}: use one of {", ".join(SAMPLERS)}.')
  if options.pruner not in PRUNERS:
    raise UserError(f'--tune.pruner={options.pruner!r}: use one of {", ".join(PRUNERS)}.')
  if options.trials < 1:
    raise UserError(f'--tune.trials={options.trials}: run at least one trial.')
  if not 0 < options.heartbeat_seconds < options.grace_seconds:
    raise UserError(f'--tune.heartbeat_seconds={options.heartbeat_seconds} must be > 0 and '
                    f'below --tune.grace_seconds={options.grace_seconds}.')
  if options.sampler == 'grid':
    size = 1
    for values in space.grid().values():
      size *= len(values)
    if size > options.trials:
      raise UserError(f'the grid has {size} points but --tune.trials={options.trials}: raise '
                      '--tune.trials to cover it, shrink the grid, or use random or bayes.')


def storage_url(options: Options, workdir: str) -> str:
  return options.storage or f'sqlite:///{os.path.join(os.path.abspath(workdir), "study.db")}'


def open_storage(url: str, options: Options) -> RDBStorage:
  """The study database at `url`; UserError if it cannot be reached."""
  engine_kwargs = {'connect_args': {'timeout': 60}} if url.startswith('sqlite') else {}
  try:
    return RDBStorage(url, engine_kwargs=engine_kwargs,
                      heartbeat_interval=options.heartbeat_seconds,
                      grace_period=options.grace_seconds,
                      heartbeat_stale_trial_callback=_retry)
  except Exception as e:  # pylint: disable=broad-except  (drivers raise many types; all fixable)
    reason = f'{type(e).__name__}: {e}'.splitlines()[0]
    raise UserError(f'--tune.storage={url!r} cannot be opened ({reason}): give a database URL '
                    'Optuna accepts (sqlite:///FILE, postgresql://..., mysql://...) that this '
                    'machine can reach.') from None


def load_or_create(storage: RDBStorage, name: str, space: Space, metric: str, direction: str,
                   options: Options) -> optuna.Study:
  """The study `name`, created on first use; UserError if it was made for another space or
  metric (the stored study is not changed)."""
  fingerprint = {'space': space.describe(), 'metric': metric}
  existing = {s.study_name: s for s in storage.get_all_studies()}
  if name in existing:
    stored = existing[name].user_attrs
    for key, value in fingerprint.items():
      if stored.get(key) != value:
        raise UserError(f'study {name!r} in {storage.url} was made with another {key} '
                        f'({stored.get(key)}), not {value}: use a new --workdir or '
                        '--tune.study, or rerun with the original settings.')
  study = optuna.create_study(storage=storage, study_name=name, load_if_exists=True,
                              direction='maximize' if direction == 'max' else 'minimize',
                              sampler=_sampler(options, space), pruner=_pruner(options))
  if name not in existing:
    for key, value in fingerprint.items():
      study.set_user_attr(key, value)
  return study


def counted_trials(study: optuna.Study) -> int:
  return len(study.get_trials(deepcopy=False, states=COUNTED))


def finished_trials(study: optuna.Study) -> int:
  return len(study.get_trials(deepcopy=False, states=COUNTED[:2]))


def retry(trial: optuna.Trial) -> None:
  """Enqueues `trial`, about to fail, again as a trial of a dead worker is (see open_storage)."""
  _retry(trial.study, next(t for t in trial.study.get_trials(deepcopy=False)
                           if t.number == trial.number))


def _sampler(options: Options, space: Space) -> optuna.samplers.BaseSampler:
  seed = None if options.seed < 0 else options.seed
  if options.sampler == 'grid':
    return optuna.samplers.GridSampler(space.grid(), seed=seed)
  if options.sampler == 'random':
    return optuna.samplers.RandomSampler(seed=seed)
  # Random trials first, as many as Optuna's default but at most half the budget.
  startup = min(10, max(options.trials // 2, 1))
  return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)


def _pruner(options: Options) -> optuna.pruners.BasePruner:
  if options.pruner == 'median':
    # Prune against the median of at least 4 earlier trials at the same step.
    return optuna.pruners.MedianPruner(n_startup_trials=4)
  if options.pruner == 'hyperband':
    return optuna.pruners.HyperbandPruner()
  return optuna.pruners.NopPruner()
