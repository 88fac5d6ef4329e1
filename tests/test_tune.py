"""train.tune: the search space and its bad input, a study that survives a killed worker, two
workers on one study, and population training equal to independent trials."""

import functools
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optuna
import pytest
from conftest import read_metrics

import zoo
from configs import digits_tune
from train import classify, tune
from train.core import optim, validate
from train.core.errors import UserError
from train.core.state import create_train_state
from train.tuning import population, population_study
from train.tuning import space as space_lib
from train.tuning import study as study_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A tiny search: 4 steps of a 4/8-channel CNN per trial, evaluated every 2 steps.
TINY_RECIPE = '''
from configs import digits_tune


def get_config():
  config = digits_tune.get_config()
  config.data.data_dir = {data_dir!r}
  config.model_kwargs = dict(features=(4, 8), hidden=16)
  config.batch_size = 32
  config.eval_batch_size = 144
  config.num_steps = 4
  config.eval_every_epochs = 2 / 35  # 1150 // 32 = 35 steps per epoch
  config.checkpoint_every_epochs = 2 / 35
  config.log_every_steps = 2
  config.search = {search}
  return config
'''
SEARCH = "dict(optim=dict(learning_rate=('log_uniform', 1e-3, 1e-2)))"


def _recipe(tmp_path, data_dir, search=SEARCH, name='recipe') -> str:
  path = tmp_path / f'{name}.py'
  path.write_text(TINY_RECIPE.format(data_dir=data_dir, search=search))
  return str(path)


def _space(search: dict) -> space_lib.Space:
  config = digits_tune.get_config()
  with config.unlocked():
    config.search = search
  return space_lib.parse(config)


def test_space_parses_each_kind():
  space = _space(dict(
      optim=dict(learning_rate=('log_uniform', 1e-4, 1e-2), weight_decay=('uniform', 0.0, 0.1)),
      label_smoothing=('choice', (0.0, 0.1)),
      model_kwargs=dict(features=('choice', ((8, 16), (16, 32))), hidden=('int', 16, 64, 16))))
  d = optuna.distributions
  assert space['optim.learning_rate'].distribution == d.FloatDistribution(1e-4, 1e-2, log=True)
  assert space['optim.weight_decay'].distribution == d.FloatDistribution(0.0, 0.1)
  assert space['label_smoothing'].distribution == d.CategoricalDistribution((0.0, 0.1))
  assert space['model_kwargs.hidden'].distribution == d.IntDistribution(16, 64, step=16)
  features = space['model_kwargs.features']
  assert features.value('(16, 32)') == (16, 32)
  assert _space(dict(model_kwargs=dict(hidden=('int', 16, 64, 16)))).grid() == {
      'model_kwargs.hidden': [16, 32, 48, 64]}
  # A trial's config is the command line's: the printed overrides give back the same values.
  config = digits_tune.get_config()
  trial = space_lib.trial_config(config, [features.override((16, 32)),
                                          space['optim.learning_rate'].override(0.00123)])
  assert trial.model_kwargs.features == (16, 32) and trial.optim.learning_rate == 0.00123
  assert 'search' not in trial
  # The recipe trains untuned as it is (the printed commands run it): `search` is not a value.
  validate.check_config(config)


@pytest.mark.parametrize('search, message', [
    (dict(optim=dict(learning_rat=('uniform', 0.1, 0.2))),
     "unknown config field 'optim.learning_rat'; did you mean 'learning_rate'"),
    ({}, 'config.search is empty'),
    (dict(optim=dict(learning_rate=('uniform', 0.2, 0.1))), r'low \(0.2\) must be below high'),
    (dict(optim=dict(learning_rate=('log_uniform', 0.0, 0.1))), 'a log scale needs low > 0'),
    (dict(optim=dict(learning_rate=('loguniform', 1e-3, 0.1))), "did you mean 'log_uniform'"),
    (dict(batch_size=('int', 8.0, 64)), "expected \\('int', low, high\\)"),
])
def test_bad_space(search, message):
  with pytest.raises(UserError, match=message):
    _space(search)


def test_grid_larger_than_trials_and_continuous_grid():
  space = _space(dict(batch_size=('choice', (16, 32, 64)), optim=dict(
      learning_rate=('choice', (1e-3, 1e-2)))))
  with pytest.raises(UserError, match='the grid has 6 points but --tune.trials=5'):
    study_lib.check_options(study_lib.Options(sampler='grid', trials=5), space)
  study_lib.check_options(study_lib.Options(sampler='grid', trials=6), space)
  continuous = _space(dict(optim=dict(learning_rate=('uniform', 1e-3, 1e-2))))
  with pytest.raises(UserError, match='optim.learning_rate is continuous'):
    study_lib.check_options(study_lib.Options(sampler='grid', trials=6), continuous)


def _main_error(argv, capsys) -> str:
  with pytest.raises(SystemExit) as exit_info:
    tune.main(argv)
  assert exit_info.value.code == 2
  lines = capsys.readouterr().err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: ')
  return lines[0]


def test_bad_command_lines_exit_2_with_one_line(tmp_path, data_dir, capsys):
  recipe = _recipe(tmp_path, data_dir)
  workdir = str(tmp_path / 'study')
  base = ['--config', recipe, '--workdir', workdir]
  assert 'cannot be opened' in _main_error(
      base + ['--tune.storage=postgresql://nobody@127.0.0.1:1/none'], capsys)
  assert 'cannot be opened' in _main_error(
      base + ['--tune.storage=sqlite:////no/such/folder/study.db'], capsys)
  assert '--tune.sampler' in _main_error(base + ['--tune.sampler=annealing'], capsys)
  assert 'unknown flag --tune.trails' in _main_error(base + ['--tune.trails=3'], capsys)
  assert 'validation split' in _main_error(
      base + ['--config.data.validation_split=0'], capsys)
  assert '--tune.mode=population searches optim.learning_rate' in _main_error(
      ['--config', _recipe(tmp_path, data_dir, "dict(batch_size=('choice', (16, 32)))",
                           name='widths'), '--workdir', workdir, '--tune.mode=population'],
      capsys)
  # A study made with one space refuses another, and is left as it was.
  storage = study_lib.open_storage(study_lib.storage_url(study_lib.Options(), workdir),
                                   study_lib.Options())
  made = study_lib.load_or_create(storage, 'recipe', _space({'optim': {'learning_rate': (
      'uniform', 0.1, 0.2)}}), 'accuracy', 'max', study_lib.Options())
  before = made.user_attrs
  assert 'made with another space' in _main_error(base, capsys)
  assert optuna.load_study(study_name='recipe', storage=storage).user_attrs == before
  assert not os.path.exists(os.path.join(workdir, 'trials'))


def test_study_continues_after_a_killed_and_a_stopped_worker(tmp_path, data_dir, capsys,
                                                             monkeypatch):
  recipe = _recipe(tmp_path, data_dir)
  workdir = str(tmp_path / 'study')
  flags = ['--tune.trials=3', '--tune.sampler=random', '--tune.pruner=none',
           '--tune.heartbeat_seconds=1', '--tune.grace_seconds=2']
  options = study_lib.Options(trials=3, sampler='random', pruner='none', heartbeat_seconds=1,
                              grace_seconds=2)
  os.makedirs(workdir)
  # A worker killed (kill -9) in its first trial: RUNNING, with a heartbeat that stops.
  storage = study_lib.open_storage(study_lib.storage_url(options, workdir), options)
  config = tune.config_lib.load_config(recipe)
  space = space_lib.parse(config)
  study = study_lib.load_or_create(storage, 'recipe', space, 'accuracy', 'max', options)
  dead = study.ask()
  dead_values = space.suggest(dead)
  storage.record_heartbeat(dead._trial_id)  # pylint: disable=protected-access
  time.sleep(options.grace_seconds + 1.2)  # SQLite's clock counts whole seconds
  # The next worker reruns that trial and is stopped (SIGTERM) after its evaluation at step 2.
  train_and_evaluate = classify.train_and_evaluate

  def stopped_at_step_2(config, workdir, hooks=()):
    def stop(step, metrics):
      if step == 2:
        os.kill(os.getpid(), signal.SIGTERM)
    return train_and_evaluate(config, workdir, hooks=[*hooks, stop])

  monkeypatch.setattr(classify, 'train_and_evaluate', stopped_at_step_2)
  with pytest.raises(SystemExit) as exit_info:
    tune.main(['--config', recipe, '--workdir', workdir, *flags])
  assert exit_info.value.code == 143
  assert 'run the same command again to resume' in capsys.readouterr().err
  monkeypatch.setattr(classify, 'train_and_evaluate', train_and_evaluate)
  tune.main(['--config', recipe, '--workdir', workdir, *flags])
  out = capsys.readouterr().out
  trials = optuna.load_study(study_name='recipe', storage=storage).trials
  assert [t.state.name for t in trials] == ['FAIL', 'FAIL', 'COMPLETE', 'COMPLETE', 'COMPLETE']
  # Both reruns took the killed trial's parameters; the second resumed the stopped run.
  rerun = {'optim.learning_rate': dead_values['optim.learning_rate']}
  assert trials[1].params == trials[2].params == rerun
  stopped = os.path.join(workdir, 'trials', '001')
  assert trials[2].user_attrs['workdir'] == stopped
  assert f'Resuming from the checkpoint at step 2 in {stopped}' in out
  evals = [r['step'] for r in read_metrics(stopped, 'validation')]
  assert evals == [2, 4]
  assert trials[2].value == max(r['accuracy'] for r in read_metrics(stopped, 'validation'))
  assert sorted(os.listdir(os.path.join(workdir, 'trials'))) == ['001', '003', '004']
  assert 'Reproduce it: python -m train.classify --config' in out
  assert os.path.isfile(os.path.join(workdir, 'trials.csv'))
  # Done: running the command again trains nothing and reports the same study.
  tune.main(['--config', recipe, '--workdir', workdir, *flags])
  assert len(optuna.load_study(study_name='recipe', storage=storage).trials) == 5


def test_two_workers_share_a_study(tmp_path, data_dir):
  recipe = _recipe(tmp_path, data_dir)
  workdir = str(tmp_path / 'study')
  os.makedirs(workdir)
  command = [sys.executable, '-m', 'train.tune', '--config', recipe, '--workdir', workdir,
             '--tune.trials=2', '--tune.sampler=random', '--tune.pruner=none',
             '--tune.heartbeat_seconds=1']
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS='cpu')
  # Created first, so the two workers do not race to create it.
  options = study_lib.Options()
  study_lib.load_or_create(
      study_lib.open_storage(study_lib.storage_url(options, workdir), options), 'recipe',
      space_lib.parse(tune.config_lib.load_config(recipe)), 'accuracy', 'max', options)
  logs = [open(tmp_path / f'worker{i}.log', 'w+', encoding='utf-8') for i in range(2)]
  workers = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
             for log in logs]  # files, not pipes: a full pipe would stall a worker
  for worker, log in zip(workers, logs):
    worker.wait(timeout=600)
    log.close()
  outputs = [(tmp_path / f'worker{i}.log').read_text(encoding='utf-8') for i in range(2)]
  assert [w.returncode for w in workers] == [0, 0], outputs
  trials = optuna.load_study(study_name='recipe', storage=f'sqlite:///{workdir}/study.db').trials
  assert [t.state.name for t in trials] == ['COMPLETE'] * 2
  # Each trial ran once, in its own workdir: one run's evaluations at steps 2 and 4.
  for trial in trials:
    with open(os.path.join(workdir, 'trials', f'{trial.number:03d}', 'metrics.jsonl')) as f:
      steps = [line for line in f if '"split": "validation"' in line]
    assert len(steps) == 2, (trial.number, steps)
  # Each trial's progress line was printed by exactly one of the workers.
  finished = [line for out in outputs for line in out.splitlines()
              if line.startswith('trial ') and ' complete at step' in line]
  assert sorted(int(line.split()[1]) for line in finished) == [0, 1], outputs


def test_population_mode_trains_the_trials_k_at_a_time(tmp_path, data_dir, capsys):
  recipe = _recipe(tmp_path, data_dir, "dict(optim=dict(learning_rate=('log_uniform', 1e-3, "
                   "1e-2)), label_smoothing=('uniform', 0.0, 0.2))")
  workdir = str(tmp_path / 'study')
  tune.main(['--config', recipe, '--workdir', workdir, '--tune.mode=population',
             '--tune.population=2', '--tune.trials=3', '--tune.sampler=random'])
  out = capsys.readouterr().out
  trials = optuna.load_study(study_name='recipe', storage=f'sqlite:///{workdir}/study.db').trials
  assert [t.state.name for t in trials] == ['COMPLETE'] * 3
  assert 'population of 2 trials (0, 1)' in out and 'population of 1 trials (2)' in out
  for trial in trials:
    assert 1e-3 <= trial.params['optim.learning_rate'] <= 1e-2
    assert 0 < trial.value <= 1 and 0 < trial.user_attrs['test_metric'] <= 1
    assert trial.user_attrs['last_step'] in (2, 4)  # the evaluation of the best state
  assert 'Reproduce it: python -m train.classify --config' in out
  assert '--config.label_smoothing=' in out.split('Reproduce it: ')[1].splitlines()[0]
  assert not os.path.exists(os.path.join(workdir, 'trials'))


def test_population_mode_reruns_the_trials_of_a_killed_process(tmp_path, monkeypatch, capsys):
  """Trials left RUNNING by a killed process go stale (no heartbeat for grace_seconds), fail
  and are trained again with their parameters, as in trials mode. The training itself is
  stubbed: what is checked is which trials the study runs."""
  config = digits_tune.get_config()
  with config.unlocked():
    config.search = ml_collections.ConfigDict(
        {'optim': {'learning_rate': ('log_uniform', 1e-3, 1e-2)}})
  space = space_lib.parse(config)
  options = study_lib.Options(mode='population', population=2, trials=2, sampler='random',
                              heartbeat_seconds=1, grace_seconds=2)
  storage = study_lib.open_storage(f'sqlite:///{tmp_path}/study.db', options)
  study = study_lib.load_or_create(storage, 'recipe', space, 'accuracy', 'max', options)
  with pytest.warns(UserWarning, match='Heartbeat of storage'):
    killed = [study.ask() for _ in range(2)]
  killed_rates = sorted(space.suggest(trial)['optim.learning_rate'] for trial in killed)
  for trial in killed:  # the population's last heartbeat before the kill
    storage.record_heartbeat(trial._trial_id)
  time.sleep(options.grace_seconds + 1.2)  # SQLite's clock counts whole seconds
  trained = []

  def fake_train(config, pop, test):
    trained.extend(pop.learning_rate.tolist())
    return [{'accuracy': 0.5, 'step': 4, 'test_accuracy': 0.4}] * pop.size

  monkeypatch.setattr(population, 'train', fake_train)
  population_study.run(study, config, space, options, lambda overrides: 'python -m ...')
  states = [t.state.name for t in study.trials]
  assert states == ['FAIL', 'FAIL', 'COMPLETE', 'COMPLETE'], states
  np.testing.assert_allclose(sorted(trained), killed_rates, rtol=1e-6)
  assert 'population of 2 trials (2, 3)' in capsys.readouterr().out


def test_population_step_equals_independent_steps():
  config = digits_tune.get_config()
  config.optim.warmup_epochs = 0.5
  model = zoo.create_model('cnn', num_classes=10, features=(4, 8), hidden=16)
  values = dict(learning_rate=[1e-3, 3e-3, 1e-2], weight_decay=[0.0, 1e-3, 1e-1],
                label_smoothing=[0.0, 0.1, 0.2])
  pop = population.Population.of(config, **values)
  rng = jax.random.key(0)
  shape = (8, 8, 1)
  states = population.init(model, population.optimizer(config, 20, 4), rng, shape, pop)
  step = jax.jit(population.train_step)
  data = np.random.default_rng(0)
  batches = [{'image': jnp.asarray(data.normal(size=(8, *shape)), jnp.float32),
              'label': jnp.asarray(data.integers(0, 10, 8))} for _ in range(3)]
  for i, batch in enumerate(batches):
    states, metrics = step(states, batch, jax.random.key(i), jnp.asarray(pop.label_smoothing))
  for k in range(pop.size):
    trial_optim = ml_collections.ConfigDict(config.optim.to_dict())
    trial_optim.learning_rate = values['learning_rate'][k]
    trial_optim.weight_decay = values['weight_decay'][k]
    state = create_train_state(model, optim.make_optimizer(trial_optim, 20, 4), rng, shape)
    trial_step = jax.jit(functools.partial(classify.train_step,
                                           label_smoothing=values['label_smoothing'][k]))
    for i, batch in enumerate(batches):
      state, trial_metrics = trial_step(state, batch, jax.random.key(i))
    np.testing.assert_allclose(metrics['loss'][k], trial_metrics['loss'], rtol=1e-5)
    for ours, theirs in zip(jax.tree.leaves(jax.tree.map(lambda x: x[k], states.params)),
                            jax.tree.leaves(state.params)):
      np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_the_search_space_can_live_in_a_file_of_its_own(tmp_path, data_dir, capsys):
  recipe = _recipe(tmp_path, data_dir, search='dict()')
  space_file = tmp_path / 'space.py'
  space_file.write_text('import ml_collections\n\n\ndef get_config():\n'
                        '  return ml_collections.ConfigDict(dict(optim=dict(\n'
                        "      weight_decay=('log_uniform', 1e-5, 1e-3))))\n")
  workdir = str(tmp_path / 'study')
  base = ['--config', recipe, '--workdir', workdir]
  assert _main_error([*base, '--search', str(tmp_path / 'none.py')], capsys) == (
      f"error: --search: no such config file {str(tmp_path / 'none.py')!r}")
  tune.main([*base, '--search', str(space_file), '--tune.trials=1', '--tune.sampler=random'])
  trials = optuna.load_study(study_name='recipe', storage=f'sqlite:///{workdir}/study.db').trials
  assert [t.state.name for t in trials] == ['COMPLETE']
  assert list(trials[0].params) == ['optim.weight_decay']
  assert 1e-5 <= trials[0].params['optim.weight_decay'] <= 1e-3
