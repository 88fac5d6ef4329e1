"""`python -m train.tune --tune.mode=population`: a study's trials trained K at a time, each K as
one compiled program (train/tuning/population.py).

The sampler proposes K trials (Optuna's ask-and-tell interface); they are trained together for
the recipe's whole duration (no pruning: they share every step), each trial's value is its best
validation accuracy, and each is scored on the test split with its state at that evaluation.
Only learning rate, weight decay and label smoothing may be searched: trials that differ in
anything else are different programs. Trials have no workdir of their own; the command printed
for the best one trains it as an ordinary run.
"""

import contextlib
import time
import warnings

import ml_collections
import optuna
from optuna.storages._heartbeat import get_heartbeat_thread

from train.core.errors import UserError
from train.tuning import population, report
from train.tuning import space as space_lib
from train.tuning import study as study_lib

# Searched config field -> Population field.
FIELDS = {'optim.learning_rate': 'learning_rate', 'optim.weight_decay': 'weight_decay',
          'label_smoothing': 'label_smoothing'}


def check_space(space: space_lib.Space, task: str) -> None:
  """UserError unless `space` is one population mode can train."""
  if task != 'classify':
    raise UserError(f'--tune.mode=population trains classifiers; --tune.task={task!r} needs '
                    '--tune.mode=trials.')
  others = [name for name in space if name not in FIELDS]
  if others:
    raise UserError(f'--tune.mode=population searches {", ".join(FIELDS)} only, not '
                    f'{", ".join(others)}: remove {"it" if len(others) == 1 else "them"} from '
                    'config.search or use --tune.mode=trials.')


def run(study: optuna.Study, config: ml_collections.ConfigDict, space: space_lib.Space,
        options: study_lib.Options, command) -> None:
  """Trains populations until `options.trials` trials have finished. `command(overrides)` is
  the command line that trains one trial alone."""
  config = space_lib.trial_config(config, [])
  start = time.monotonic()
  while True:
    # As in trials mode: the trials of a killed process, without a heartbeat for
    # grace_seconds, fail and are enqueued again with their parameters (study.open_storage).
    optuna.storages.fail_stale_trials(study)
    if (done := study_lib.finished_trials(study)) >= options.trials:
      return
    with warnings.catch_warnings():  # Optuna expects heartbeats with study.optimize only
      warnings.filterwarnings('ignore', 'Heartbeat of storage', UserWarning)
      trials = [study.ask() for _ in range(min(options.population, options.trials - done))]
    values = [space.suggest(trial) for trial in trials]
    print(f'population of {len(trials)} trials ({", ".join(str(t.number) for t in trials)}); '
          f'{done}/{options.trials} trials done', flush=True)
    try:
      with contextlib.ExitStack() as heartbeats:  # Optuna's own, as study.optimize sends
        for trial in trials:
          heartbeats.enter_context(get_heartbeat_thread(trial._trial_id, study._storage))
        results = population.train(config, population.Population.of(
            config, **{FIELDS[name]: [v[name] for v in values] for name in space}), test=True)
    except BaseException:  # interrupted: these trials did not finish; a rerun runs them again
      for trial in trials:
        study_lib.retry(trial)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
      raise
    for trial, trial_values, result in zip(trials, values, results):
      trial.set_user_attr(report.STEP, result['step'])
      trial.set_user_attr(report.TEST, result['test_accuracy'])
      trial.set_user_attr(report.COMMAND, command(
          [space[name].override(value) for name, value in trial_values.items()]))
      study.tell(trial, result['accuracy'])
      print(f'trial {trial.number} complete: validation accuracy {result["accuracy"]:.4f} at '
            f'step {result["step"]} ({_describe(trial_values)}); '
            f'{study_lib.finished_trials(study)}/{options.trials} trials, '
            f'{time.monotonic() - start:.0f} s', flush=True)


def _describe(values: dict[str, float]) -> str:
  return ', '.join(f'{name}={value:.3g}' for name, value in values.items())
