"""Nothing lost, nothing mixed: bad input refused in one line with a finished run left as it was,
signals that save, unusable checkpoints passed over, one run per workdir, no NaN checkpoint."""

import errno
import glob
import hashlib
import io
import json
import os
import shutil
import signal

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow as tf
from conftest import checkpoint_arrays, read_metrics
from orbax.checkpoint._src.path import async_path
from PIL import Image

from train import classify, gan_eval, predict, vae
from train.core import checkpoint as checkpoint_lib
from train.core import workdir as workdir_lib
from train.core.errors import UserError
from train.core.writer import MetricWriter
from train.data import image_folder

RECIPE = 'configs/digits_cnn.py:tiny'
# Fewer tf.data traces: one training stream, no affine warp.
FAST = ['--config.data.shards=1', '--config.data.augment.rotation=0',
        '--config.data.augment.shift=0']


def _classify_args(workdir, data_dir, *extra):
  return ['--config', RECIPE, '--workdir', str(workdir), f'--config.data.data_dir={data_dir}',
          *FAST, *extra]


@pytest.fixture(scope='session')
def finished_run(tmp_path_factory, data_dir):
  """A finished tiny digits run (4 steps), shared by every case that must leave it as it was."""
  workdir = tmp_path_factory.mktemp('finished') / 'run'
  classify.main(argv=_classify_args(workdir, data_dir))
  return str(workdir)


def _snapshot(workdir):
  """Every file under `workdir` with the SHA-256 of its bytes."""
  found = {}
  for path in sorted(glob.glob(os.path.join(workdir, '**'), recursive=True)):
    if os.path.isfile(path):
      with open(path, 'rb') as f:
        found[os.path.relpath(path, workdir)] = hashlib.sha256(f.read()).hexdigest()
  return found


def _write_config(tmp, name, text):
  path = tmp / name
  path.write_text(text)
  return str(path)


def _image_folder(tmp, classes, name='folder'):
  root = tmp / name
  for c in classes:
    os.makedirs(root / c)
    for i in range(3):
      Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(root / c / f'{i}.png')
  return str(root)


def _classify(*extra):
  return lambda run, data_dir, tmp: (classify.main, _classify_args(run, data_dir, *extra))


def _classify_config(config_spec, *extra):
  def make(run, data_dir, tmp):
    spec = config_spec(tmp) if callable(config_spec) else config_spec
    return classify.main, ['--config', spec, '--workdir', run,
                           f'--config.data.data_dir={data_dir}', *extra]
  return make


def _predict(*args):
  def make(run, data_dir, tmp):
    del data_dir
    return predict.main, [arg(run, tmp) if callable(arg) else arg for arg in args]
  return make


def _workdir(run, tmp):
  del tmp
  return run


def _not_an_image(run, tmp):
  del run
  path = tmp / 'notes.png'
  path.write_text('not an image')
  return str(path)


def _a_digit(run, tmp):
  del run
  path = tmp / 'digit.png'
  Image.fromarray(np.zeros((8, 8), np.uint8)).save(path)
  return str(path)


def _bad_workdir_file(run, data_dir, tmp):
  del run
  path = tmp / 'a_file'
  path.write_text('')
  return classify.main, _classify_args(path, data_dir)


def _busy_workdir(run, data_dir, tmp):
  del tmp
  return classify.main, _classify_args(run, data_dir, '--config.num_steps=6')


# (name, how to call: (run, data_dir, tmp) -> (main, argv)); each must exit 2 with one line.
BAD_INPUTS = [
    ('batch_size 0', _classify('--config.batch_size=0')),
    ('batch_size negative', _classify('--config.batch_size=-32')),
    ('batch_size not a number', _classify('--config.batch_size=abc')),
    ('batch_size not a multiple of the devices', _classify('--config.batch_size=30')),
    ('eval_batch_size 0', _classify('--config.eval_batch_size=0')),
    ('grad_accum_steps 0', _classify('--config.grad_accum_steps=0')),
    ('log_every_steps 0', _classify('--config.log_every_steps=0')),
    ('num_epochs 0', _classify('--config.num_steps=0', '--config.num_epochs=0')),
    ('num_epochs negative', _classify('--config.num_steps=0', '--config.num_epochs=-1')),
    ('num_epochs nan', _classify('--config.num_steps=0', '--config.num_epochs=nan')),
    ('num_steps negative', _classify('--config.num_steps=-5')),
    ('eval_every_epochs 0', _classify('--config.eval_every_epochs=0')),
    ('checkpoint_every_epochs negative', _classify('--config.checkpoint_every_epochs=-1')),
    ('keep_checkpoints 0', _classify('--config.keep_checkpoints=0')),
    ('learning_rate negative', _classify('--config.optim.learning_rate=-0.1')),
    ('warmup negative', _classify('--config.optim.warmup_epochs=-1')),
    ('weight_decay negative', _classify('--config.optim.weight_decay=-1')),
    ('optimizer unknown', _classify('--config.optim.name=sgdd')),
    ('schedule unknown', _classify('--config.optim.schedule=linear')),
    ('early_stopping metric misspelt', _classify('--config.early_stopping.metric=acuracy')),
    ('early_stopping mode unknown', _classify('--config.early_stopping.mode=best')),
    ('early_stopping patience negative', _classify('--config.early_stopping.patience=-1')),
    ('dtype not a float', _classify('--config.dtype=int32')),
    ('parallelism unknown', _classify('--config.parallelism=pmop')),
    ('field unknown', _classify('--config.batchsize=32')),
    ('field of a value', _classify('--config.seed.x=1')),
    ('widths containing 0', _classify('--config.model_kwargs.features=(0,8)')),
    ('model kwarg unknown', _classify('--config.model_kwargs.depth=3')),
    ('model unknown', _classify('--config.model=cnn2')),
    ('image_size 0', _classify('--config.data.image_size=(0,8)')),
    ('dataset empty', _classify('--config.data.dataset=')),
    ('dataset malformed', _classify('--config.data.dataset=mnist:3.x.y')),
    ('dataset unknown', _classify('--config.data.dataset=no_such_dataset')),
    ('folder missing', _classify('--config.data.dataset=folder:/no/such/folder')),
    ('folder with a single class',
     lambda run, data_dir, tmp: (classify.main, _classify_args(
         run, data_dir, f'--config.data.dataset=folder:{_image_folder(tmp, ["cat"])}'))),
    ('resume with another width', _classify('--config.model_kwargs.features=(8,8)')),
    ('model that rejects the recipe\'s fields', _classify('--config.model=resnet20')),
    ('resume with another hidden width', _classify('--config.model_kwargs.hidden=32')),
    ('resume with another class count', _classify('--config.data.classes=(0,1,2)')),
    ('resume with another image size', _classify('--config.data.image_size=(12,12)')),
    ('config file missing', _classify_config('configs/no_such_recipe.py')),
    ('config file with a syntax error', _classify_config(
        lambda tmp: _write_config(tmp, 'broken.py', 'def get_config(:\n  pass\n'))),
    ('config file raising', _classify_config(
        lambda tmp: _write_config(tmp, 'raising.py', 'import no_such_module\n'))),
    ('get_config returning a dict', _classify_config(
        lambda tmp: _write_config(tmp, 'as_dict.py', 'def get_config():\n  return {}\n'))),
    ('no get_config', _classify_config(
        lambda tmp: _write_config(tmp, 'empty.py', 'x = 1\n'))),
    (':arg on a recipe that takes none', _classify_config('configs/classify_base.py:tiny')),
    ('unknown variant', _classify_config('configs/digits_cnn.py:huge')),
    ('workdir is a file', _bad_workdir_file),
    ('predict top_k 0', _predict('--workdir', _workdir, '--top_k', '0', _a_digit)),
    ('predict image missing', _predict('--workdir', _workdir, '/no/such/image.png')),
    ('predict file not an image', _predict('--workdir', _workdir, _not_an_image)),
    ('predict workdir missing', _predict('--workdir', '/no/such/workdir', _a_digit)),
    ('predict workdir of no run',
     _predict('--workdir', lambda run, tmp: str(tmp), _a_digit)),
    ('gan_eval on a classification workdir (no feature network)',
     lambda run, data_dir, tmp: (gan_eval.main, [
         '--config', 'configs/digits_dcgan.py:tiny', '--workdir', run,
         f'--config.data.data_dir={data_dir}'])),
    ('vae batch_size 0', lambda run, data_dir, tmp: (vae.main, [
        '--config', 'configs/digits_vae.py:tiny', '--workdir', run,
        f'--config.data.data_dir={data_dir}', '--config.batch_size=0'])),
    ('vae learning_rate negative', lambda run, data_dir, tmp: (vae.main, [
        '--config', 'configs/digits_vae.py:tiny', '--workdir', run,
        f'--config.data.data_dir={data_dir}', '--config.optim.learning_rate=-1'])),
]


@pytest.mark.parametrize('name,make', BAD_INPUTS, ids=[name for name, _ in BAD_INPUTS])
def test_bad_input_is_one_line_and_leaves_a_finished_run_as_it_was(
    name, make, finished_run, data_dir, tmp_path, capsys):
  before = _snapshot(finished_run)
  main, argv = make(finished_run, data_dir, tmp_path)
  with pytest.raises(SystemExit) as exit_info:
    main(argv=argv)
  err = capsys.readouterr().err
  assert exit_info.value.code == 2, (name, err)
  lines = [line for line in err.splitlines() if line.strip()]
  assert len(lines) == 1 and lines[0].startswith('error: '), (name, err)
  assert 'Traceback' not in err
  assert _snapshot(finished_run) == before, name


def test_a_second_run_on_a_busy_workdir_is_refused(finished_run, data_dir, tmp_path, capsys):
  before = _snapshot(finished_run)
  with workdir_lib.hold(finished_run):
    with pytest.raises(SystemExit) as exit_info:
      classify.main(argv=_classify_args(finished_run, data_dir, '--config.num_steps=6'))
  err = capsys.readouterr().err
  assert exit_info.value.code == 2
  assert f'pid {os.getpid()}' in err and 'in use by another run' in err
  assert _snapshot(finished_run) == before


def test_a_lock_left_by_a_dead_run_is_taken_over(tmp_path, capsys):
  lock = tmp_path / workdir_lib.LOCK_FILE
  lock.write_text(json.dumps({'host': 'elsewhere', 'pid': 999999}))  # nobody holds its flock
  with workdir_lib.hold(str(tmp_path)):
    assert json.loads(lock.read_text())['pid'] == os.getpid()
  assert 'Taking over the lock' in capsys.readouterr().out
  assert not lock.exists()


def _corrupt_latest(workdir):
  checkpoints = os.path.join(workdir, 'checkpoints')
  latest = max(int(n) for n in os.listdir(checkpoints) if n.isdigit())
  for path in glob.glob(os.path.join(checkpoints, str(latest), 'state', '**', 'd', '*'),
                        recursive=True):
    with open(path, 'r+b') as f:
      f.truncate(10)
  return latest


# The unusable checkpoint is reported in one line: none of the tracebacks of the reads Orbax
# leaves running (printed, or reported as unraisable) comes out.
@pytest.mark.filterwarnings('error::pytest.PytestUnraisableExceptionWarning')
def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_one(
    finished_run, data_dir, tmp_path, capsys):
  workdir = str(tmp_path / 'run')
  shutil.copytree(finished_run, workdir)
  corrupt = _corrupt_latest(workdir)
  # A partial save a killed run left behind.
  os.makedirs(os.path.join(workdir, 'checkpoints', '6.orbax-checkpoint-tmp-123'))
  lines = predict.predict(workdir, [_a_digit(None, tmp_path)])
  out, err = capsys.readouterr()
  assert f'checkpoint at step {corrupt}' in out and 'unusable' in out
  assert 'Traceback' not in err
  assert len(lines) == 1
  assert os.path.isdir(os.path.join(workdir, 'checkpoints', str(corrupt)))  # predict: read only
  classify.main(argv=_classify_args(workdir, data_dir))
  out, err = capsys.readouterr()
  assert f'Resuming from the checkpoint at step {corrupt - 2}' in out
  assert 'Traceback' not in err
  assert os.path.isdir(os.path.join(workdir, checkpoint_lib.UNUSABLE_DIR, str(corrupt)))
  assert not glob.glob(os.path.join(workdir, 'checkpoints', '*tmp*'))
  records = [(r['step'], r['split']) for r in map(json.loads, open(
      os.path.join(workdir, 'metrics.jsonl')))]
  assert sorted(records) == sorted(set(records))


def test_divergence_saves_nothing_non_finite_and_names_the_checkpoint_to_resume(
    finished_run, data_dir, tmp_path, capsys):
  workdir = str(tmp_path / 'run')
  shutil.copytree(finished_run, workdir)
  with pytest.raises(SystemExit) as exit_info:
    classify.main(argv=_classify_args(workdir, data_dir, '--config.num_steps=12',
                                      '--config.optim.learning_rate=1e30'))
  err = capsys.readouterr().err
  assert exit_info.value.code == 2
  assert 'training diverged' in err and 'step 4 in' in err, err
  checkpointer = checkpoint_lib.Checkpointer(workdir, keep=1, best_metric='accuracy',
                                             read_only=True)
  assert checkpointer.all_steps() == [2, 4]
  checkpointer.close()


BN_RECIPE = """
from configs import digits_cnn


def get_config():
  config = digits_cnn.get_config('tiny')
  config.model = 'resnet20'
  config.model_kwargs = {'stage_sizes': (1, 1, 1), 'widths': (4, 4, 4)}
  return config
"""


def _bn_early_stopping_args(workdir, data_dir, recipe):
  """A ResNet with BatchNorm that stops early at step 6 (an improvement of 0.5 never comes)."""
  return ['--config', recipe, '--workdir', str(workdir), f'--config.data.data_dir={data_dir}',
          *FAST, '--config.num_steps=20', '--config.log_every_steps=1',
          '--config.early_stopping.patience=2', '--config.early_stopping.min_delta=0.5']


def test_sigterm_saves_the_step_and_resuming_is_exact_with_batchnorm_and_early_stopping(
    data_dir, tmp_path, monkeypatch, capsys):
  reference, interrupted = str(tmp_path / 'reference'), str(tmp_path / 'interrupted')
  recipe = _write_config(tmp_path, 'bn_recipe.py', BN_RECIPE)
  classify.main(argv=_bn_early_stopping_args(reference, data_dir, recipe))
  assert 'Early stopping at step 6' in capsys.readouterr().out
  stop_at = int(np.random.default_rng().integers(3, 6))  # after an evaluation, before the stop
  write_scalars = MetricWriter.write_scalars

  def signal_at_step(self, step, split, metrics):
    write_scalars(self, step, split, metrics)
    if step == stop_at and split == 'train':
      os.kill(os.getpid(), signal.SIGTERM)

  monkeypatch.setattr(MetricWriter, 'write_scalars', signal_at_step)
  with pytest.raises(SystemExit) as exit_info:
    classify.main(argv=_bn_early_stopping_args(interrupted, data_dir, recipe))
  monkeypatch.undo()
  assert exit_info.value.code == 143
  assert f'SIGTERM at step {stop_at}: saved the checkpoint' in capsys.readouterr().err
  assert checkpoint_arrays(interrupted, 'params')[0] == stop_at
  classify.main(argv=_bn_early_stopping_args(interrupted, data_dir, recipe))
  out = capsys.readouterr().out
  assert f'Resuming from the checkpoint at step {stop_at}' in out
  assert 'Early stopping at step 6' in out
  for name in ('params', 'batch_stats'):
    step_a, a = checkpoint_arrays(reference, name)
    step_b, b = checkpoint_arrays(interrupted, name)
    assert step_a == step_b == 6
    jax.tree.map(np.testing.assert_array_equal, a, b)
  records = [(r['step'], r['split']) for r in read_metrics(interrupted)]
  assert len(records) == len(set(records)) and records == [
      (r['step'], r['split']) for r in read_metrics(reference)]
  # An early-stopped run run again does not train on.
  classify.main(argv=_bn_early_stopping_args(interrupted, data_dir, recipe))
  assert 'stopped early at step 6' in capsys.readouterr().out
  assert checkpoint_arrays(interrupted, 'params')[0] == 6


def _encoded(image_format, mode):
  """An 8x8 image in `mode`, saved as `image_format`; None if PIL cannot write that pair."""
  a = (np.arange(64, dtype=np.uint8).reshape(8, 8) * 3)
  try:
    buffer = io.BytesIO()
    Image.fromarray(np.stack([a, a[::-1], a.T], -1)).convert(mode).save(buffer, image_format)
  except OSError:
    return None
  return buffer.getvalue()


@pytest.mark.parametrize('image_format', ['PNG', 'JPEG', 'BMP', 'GIF'])
def test_the_folder_check_and_the_reader_agree_on_every_format(image_format, tmp_path):
  checked = 0
  for mode in ('1', 'L', 'P', 'RGB', 'RGBA', 'LA'):
    data = _encoded(image_format, mode)
    if data is None:
      continue
    path = tmp_path / f'{mode}.{image_format.lower()}'
    path.write_bytes(data)
    try:
      size, gray = image_folder.inspect_image(str(path))
    except UserError:
      with pytest.raises(tf.errors.InvalidArgumentError):  # rejected only if unreadable
        image_folder.decode_image(tf.constant(data), 3)
      continue
    channels = 1 if gray else 3
    image = image_folder.decode_image(tf.constant(data), channels)
    assert image.shape == (*size, channels), (image_format, mode)
    checked += 1
  assert checked >= 2


def test_predict_reads_bmp_files_for_a_one_channel_model(finished_run, tmp_path):
  digit = np.kron(np.eye(2, dtype=np.uint8) * 255, np.ones((4, 4), np.uint8))
  paths = []
  for mode in ('L', 'RGB', 'P'):
    paths.append(str(tmp_path / f'{mode}.bmp'))
    Image.fromarray(digit).convert(mode).save(paths[-1])
  lines = predict.predict(finished_run, paths)
  assert [line.split(':')[0] for line in lines] == paths
  # The same picture gives the same probabilities whatever the BMP's pixel format.
  assert len({line.split(': ')[1] for line in lines}) == 1


def test_an_early_stopping_metric_the_task_lacks_is_refused_before_training(
    data_dir, tmp_path, capsys):
  """The VAE's metrics depend on its config and data: learnt from one eval batch up front."""
  workdir = tmp_path / 'run'
  argv = ['--config', 'configs/digits_vae.py:tiny', '--workdir', str(workdir),
          f'--config.data.data_dir={data_dir}', '--config.early_stopping.patience=2']
  with pytest.raises(SystemExit) as exit_info:
    vae.main(argv=[*argv, '--config.early_stopping.metric=accuracy'])
  last_line = capsys.readouterr().err.splitlines()[-1]  # after the dataset's preparation
  assert exit_info.value.code == 2
  assert last_line == ("error: config.early_stopping.metric='accuracy' is not an eval metric of "
                       'this task; use one of bits_per_dim, kl, neg_elbo, reconstruction.')
  assert not workdir.exists()  # the run created it, then left nothing in it
  workdir.mkdir()  # one that already existed is left as it was
  with pytest.raises(SystemExit):
    vae.main(argv=[*argv, '--config.early_stopping.metric=accuracy'])
  assert not os.listdir(workdir)
  vae.main(argv=[*argv, '--config.early_stopping.metric=neg_elbo'])  # the same workdir, fixed
  assert read_metrics(workdir, 'eval')


def test_a_disk_filling_up_during_a_save_ends_in_one_line_and_keeps_the_earlier_checkpoints(
    finished_run, data_dir, tmp_path, monkeypatch, capfd):
  """The free-space check passes; the disk fills while Orbax writes the step-4 checkpoint in the
  background (its tree metadata, written after the arrays). `finished_run` has prepared the
  dataset, which reports its progress."""
  del finished_run
  capfd.readouterr()
  workdir = str(tmp_path / 'run')
  write_text = async_path.write_text

  async def disk_full_after_step_2(path, text):
    if path.name == '_METADATA' and os.path.isdir(os.path.join(workdir, 'checkpoints', '2')):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return await write_text(path, text)

  monkeypatch.setattr(async_path, 'write_text', disk_full_after_step_2)
  with pytest.raises(SystemExit) as exit_info:
    classify.main(argv=_classify_args(workdir, data_dir))
  monkeypatch.undo()
  out, err = capfd.readouterr()
  assert exit_info.value.code == 2
  assert 'Traceback' not in out + err and 'ERROR' not in out + err
  lines = [line for line in err.splitlines() if line.strip()]
  assert len(lines) == 1, err
  directory = os.path.join(workdir, 'checkpoints')
  assert lines[0].startswith('error: cannot write the checkpoint of step 4 (about ') and (
      f'bytes) to {directory} (No space left on device): free that much space' in lines[0])
  assert lines[0].endswith('run the same command again to resume from step 2.')
  assert os.listdir(directory) == ['2']  # no partial step folder
  checkpointer = checkpoint_lib.Checkpointer(workdir, keep=1, best_metric='accuracy',
                                             read_only=True)
  assert checkpointer.all_steps() == [2]
  assert checkpointer.saved_tree() is not None
  checkpointer.close()


def test_the_free_space_asked_for_a_save_is_the_checkpoint_size_within_the_margin(
    finished_run):
  """What the up-front check asks for: the arrays' bytes plus the stated margin, at least what
  the saved step takes on disk (in blocks) and not much more."""
  _, params = checkpoint_arrays(finished_run, 'params')
  step_dir = os.path.join(finished_run, 'checkpoints', '4')
  on_disk = sum(os.stat(os.path.join(root, name)).st_blocks * 512
                for root, dirs, files in os.walk(step_dir) for name in dirs + files)
  checkpointer = checkpoint_lib.Checkpointer(finished_run, keep=1, best_metric='accuracy',
                                             read_only=True)
  tree = checkpointer.saved_tree()
  checkpointer.close()
  arrays = sum(np.dtype(x.dtype).itemsize * np.prod(x.shape) for x in jax.tree.leaves(tree))
  needed = checkpoint_lib.checkpoint_bytes(
      jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), tree))
  assert params and on_disk <= needed <= arrays + 2 * on_disk


@pytest.mark.parametrize('bad', ['--config.model=cnn2', '--config.data.dataset=no_such_dataset',
                                 '--config.batch_size=0'])
def test_a_refused_config_leaves_no_new_workdir_behind(bad, finished_run, data_dir, tmp_path):
  """Refused before the run starts (batch_size) or inside it, after the workdir was locked."""
  del finished_run  # the dataset is prepared
  with pytest.raises(SystemExit) as exit_info:
    classify.main(argv=_classify_args(tmp_path / 'new' / 'run', data_dir, bad))
  assert exit_info.value.code == 2
  assert not (tmp_path / 'new').exists()


def test_checkpoints_of_the_earlier_layout_restore(finished_run, data_dir, tmp_path, capsys):
  """Before the `progress` item, a checkpoint was the state alone: Orbax's single item
  `default`, with the eval metrics beside it."""
  workdir = str(tmp_path / 'run')
  os.makedirs(workdir)
  shutil.copy(os.path.join(finished_run, 'config.json'), workdir)
  state = ocp.StandardCheckpointer().restore(
      os.path.join(finished_run, 'checkpoints', '4', 'state'))
  manager = ocp.CheckpointManager(os.path.join(workdir, 'checkpoints'),
                                  options=ocp.CheckpointManagerOptions(
                                      best_fn=lambda m: m['accuracy'], best_mode='max'))
  manager.save(4, args=ocp.args.StandardSave(state), metrics={'accuracy': 0.1})
  manager.wait_until_finished()
  manager.close()
  assert os.listdir(os.path.join(workdir, 'checkpoints', '4')).count('default') == 1
  assert predict.predict(workdir, [_a_digit(None, tmp_path)]) == predict.predict(
      finished_run, [_a_digit(None, tmp_path)])
  classify.main(argv=_classify_args(workdir, data_dir, '--config.num_steps=6'))
  out = capsys.readouterr().out
  assert f'Resuming from the checkpoint at step 4 in {workdir}' in out and 'unusable' not in out
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['4', '6']
