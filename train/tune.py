"""Hyperparameter search on Optuna: `python -m train.tune --config RECIPE --workdir DIR`.

    python -m train.tune --config configs/digits_tune.py --workdir runs/digits_tune \\
        [--tune.sampler=grid|random|bayes] [--tune.trials=N] [--tune.pruner=none|median|hyperband]
        [--tune.storage=URL] [--tune.study=NAME] [--tune.task=classify] [--config.field=value ...]
        [--tune.mode=trials|population] [--tune.population=K]

The search space is the recipe's `config.search` (train/tuning/space.py). Each trial is an
ordinary run of `train.<task>` in DIR/trials/NNN, selected on the validation split
(`data.validation_split`): the value of a trial is the best validation score of its evaluations
(its best checkpoint), reported at each evaluation so that the pruner can stop bad trials early.
The test split is scored once per finished trial, with that checkpoint. The study lives in
DIR/study.db (or --tune.storage): running the same command again, or on several workers at once,
continues it until --tune.trials trials have finished. With --tune.mode=population, K trials at a
time that differ only in learning rate, weight decay and label smoothing train as one program
(train/tuning/population_study.py). See docs/tune.md.
"""

import argparse
import contextlib
import dataclasses
import importlib
import os
import sys
import time
import warnings
from typing import Iterator, Sequence

import jax
import optuna

from train.core import cli
from train.core import config as config_lib
from train.core.errors import TrainingDiverged, UserError
from train.core.interrupt import Interrupted
from train.core.task import Task
from train.data import pipeline as input_pipeline
from train.tuning import population_study, report
from train.tuning import space as space_lib
from train.tuning import study as study_lib

_PREFIX = '--tune.'


def parse_options(flags: Sequence[tuple[str, str]]) -> study_lib.Options:
  """--tune.NAME=VALUE flags, typed like the fields of `Options`."""
  fields = {f.name: f for f in dataclasses.fields(study_lib.Options)}
  values = {}
  for name, text in flags:
    if name not in fields:
      raise UserError(f'unknown flag --tune.{name}; use one of '
                      f'{", ".join("--tune." + n for n in fields)}.')
    kind = type(fields[name].default)
    try:
      values[name] = kind(text)
    except ValueError:
      raise UserError(f'--tune.{name}={text}: expected {kind.__name__}.') from None
  return study_lib.Options(**values)


def _task(name: str):
  """`train.<name>`'s train_and_evaluate and its Task class (which names the metric)."""
  try:
    module = importlib.import_module(f'train.{name}')
  except ModuleNotFoundError:
    module = None
  tasks = [v for v in vars(module).values() if isinstance(v, type) and issubclass(v, Task)
           and v is not Task and v.__module__ == module.__name__] if module else []
  if not tasks or not hasattr(module, 'train_and_evaluate'):
    raise UserError(f'--tune.task={name!r}: not a training entry point; use classify, vae, '
                    'gan, pixelcnn or upsample.')
  return module.train_and_evaluate, tasks[0]


def tune(argv: Sequence[str]) -> optuna.Study:
  rest, tune_flags = config_lib.split_overrides(argv, _PREFIX)
  rest, overrides = config_lib.split_overrides(rest)
  parser = argparse.ArgumentParser(prog='python -m train.tune', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--config', required=True, help='recipe with a `search` section')
  parser.add_argument('--search', help='a Python file whose get_config() returns the search '
                      "space, in place of the recipe's `search` section")
  parser.add_argument('--workdir', required=True,
                      help='holds study.db, trials/NNN, trials.csv and plots/')
  args = parser.parse_args(rest)
  options = parse_options(tune_flags)
  config = config_lib.load_config(args.config)
  if args.search:
    with config.unlocked():
      config.search = config_lib.load_config(args.search, '--search')
  config_lib.apply_overrides(config, overrides)
  space = space_lib.parse(config)
  study_lib.check_options(options, space)
  train_and_evaluate, task = _task(options.task)
  if options.mode == 'population':
    population_study.check_space(space, options.task)
  if input_pipeline.validation_split(config.data) is None:
    raise UserError('tuning selects on a validation split: set data.validation_split (a '
                    "fraction of the training split such as 0.1, or a split name such as "
                    "'train[90%:]').")
  optuna.logging.set_verbosity(optuna.logging.ERROR)  # trials report themselves
  # Heartbeats, stale-trial retries and the plots are marked experimental; they are relied on.
  warnings.filterwarnings('ignore', category=optuna.exceptions.ExperimentalWarning)
  url = study_lib.storage_url(options, args.workdir)
  os.makedirs(args.workdir, exist_ok=True)
  storage = study_lib.open_storage(url, options)
  name = options.study or os.path.splitext(os.path.basename(args.config))[0]
  study = study_lib.load_or_create(storage, name, space, task.best_metric, task.best_mode,
                                   options)
  # What each trial's command line repeats: the overrides, but not of the search space itself.
  base_overrides = [f'--config.{field}={value}' for field, value in overrides
                    if field.split('.')[0] != 'search']
  objective = _Objective(train_and_evaluate, task, config, space, args, base_overrides,
                         options.task)
  with _shared_compilations(args.workdir):
    if options.mode == 'population':
      population_study.run(study, config, space, options, lambda trial_overrides: (
          report.command('train.classify', args.config, os.path.join(args.workdir, 'best_rerun'),
                         base_overrides + trial_overrides)))
    else:
      _run_study(study, objective, options, f'Study {name!r} in {url}', task.best_metric)
  print(report.write(study, task.best_metric, args.workdir), flush=True)
  return study


class _Objective:
  """Runs one trial: an ordinary training run that reports each validation score."""

  def __init__(self, train_and_evaluate, task: type[Task], config, space: space_lib.Space,
               args: argparse.Namespace, base_overrides: list[str], task_name: str):
    self.train_and_evaluate, self.task, self.config, self.space = (
        train_and_evaluate, task, config, space)
    self.args, self.base_overrides, self.task_name = args, base_overrides, task_name

  def __call__(self, trial: optuna.Trial) -> float:
    values = self.space.suggest(trial)
    overrides = self.base_overrides + [self.space[n].override(v) for n, v in values.items()]
    config = space_lib.trial_config(self.config, overrides)
    # A retried trial (its worker was stopped or killed) carries its original's attributes:
    # it resumes that run from its last checkpoint.
    workdir = trial.user_attrs.get(report.WORKDIR) or os.path.join(
        self.args.workdir, 'trials', f'{trial.number:03d}')
    trial.set_user_attr(report.WORKDIR, workdir)
    trial.set_user_attr(report.COMMAND, report.command(
        f'train.{self.task_name}', self.args.config, f'{workdir}_rerun', overrides))
    metric = self.task.best_metric

    def on_eval(step: int, metrics: dict[str, float]) -> None:
      trial.report(metrics[metric], step)
      trial.set_user_attr(report.STEP, step)
      if trial.should_prune():
        raise optuna.TrialPruned(f'validation {metric} {metrics[metric]:.4f} at step {step}')

    try:
      result = self.train_and_evaluate(config, workdir, hooks=[on_eval])
    except TrainingDiverged as e:  # a bad trial, like one the pruner stops
      raise optuna.TrialPruned(str(e)) from None
    except Interrupted:  # its step is saved: the next run of the study resumes it
      study_lib.retry(trial)
      raise
    trial.set_user_attr(report.TEST, result[f'test_{metric}'])
    return report.best_validation(workdir, metric, self.task.best_mode == 'max')


def _run_study(study: optuna.Study, objective, options: study_lib.Options, title: str,
               metric: str) -> None:
  """Runs trials until `options.trials` have finished (completed or pruned), counting those of
  every worker. A trial another worker is running is waited for: if that worker was killed, the
  trial goes stale after `grace_seconds` without a heartbeat and is run again here."""
  progress = _progress(options.trials, metric)
  while True:
    optuna.storages.fail_stale_trials(study)  # a trial whose worker died is rerun
    if study_lib.counted_trials(study) < options.trials:
      print(f'{title}: {study_lib.counted_trials(study)} of {options.trials} trials done or '
            f'running; {options.sampler} sampler, {options.pruner} pruner.', flush=True)
      study.optimize(objective, callbacks=[
          optuna.study.MaxTrialsCallback(options.trials, states=study_lib.COUNTED), progress])
    running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    if study_lib.finished_trials(study) >= options.trials or not running:
      return
    print(f'waiting for trial {", ".join(str(t.number) for t in running)}, running elsewhere '
          f'(or in a killed process, until it has sent no heartbeat for '
          f'{options.grace_seconds} s).', flush=True)
    time.sleep(options.heartbeat_seconds)


@contextlib.contextmanager
def _shared_compilations(workdir: str) -> Iterator[None]:
  """Within the block, every compiled program is kept in WORKDIR/compile_cache: trials that
  compile the same program (the same shapes; with optim.inject_hyperparams the same up to
  learning rate and weight decay) load it instead of compiling it again, in this process and in
  other workers."""
  settings = {'jax_compilation_cache_dir': os.path.join(os.path.abspath(workdir),
                                                        'compile_cache'),
              'jax_persistent_cache_min_compile_time_secs': 0.0}
  previous = {name: getattr(jax.config, name) for name in settings}
  for name, value in settings.items():
    jax.config.update(name, value)
  try:
    yield
  finally:
    for name, value in previous.items():
      jax.config.update(name, value)


def _progress(total: int, metric: str):
  start = time.monotonic()

  def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    values = ', '.join(f'{k}={v:.3g}' if isinstance(v, float) else f'{k}={v}'
                       for k, v in trial.params.items())
    scores = list(trial.intermediate_values.values())
    score = f'validation {metric} {trial.value:.4f}' if trial.value is not None else (
        f'last validation {metric} {scores[-1]:.4f}' if scores else 'no evaluation')
    print(f'trial {trial.number} {trial.state.name.lower()} at step '
          f'{trial.user_attrs.get(report.STEP, 0)}: {score} ({values}); '
          f'{study_lib.counted_trials(study)}/{total} trials, '
          f'{time.monotonic() - start:.0f} s', flush=True)
  return callback


def main(argv: Sequence[str] | None = None) -> None:
  cli.exit_on_user_error(lambda: tune(sys.argv[1:] if argv is None else argv),
                         'continue the study')


if __name__ == '__main__':
  main()
