"""train.predict: image files get the probabilities the model gives the eval pipeline's batch."""

import os

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from configs import digits_cnn
from train import classify, predict
from train.core import trained
from train.core.errors import UserError
from train.data import pipeline as input_pipeline

NUM_IMAGES = 12


@pytest.fixture(scope='session')
def trained_run(tmp_path_factory, data_dir):
  """A tiny CNN trained for 4 steps on 8x8 digits resized to 12x12, and its workdir."""
  tmp = tmp_path_factory.mktemp('predict')
  config = digits_cnn.get_config()
  config.data.data_dir = data_dir
  config.data.image_size = (12, 12)  # The files are 8x8: prediction must resize them too.
  config.data.shards = 1  # Each training stream costs a tf.data trace...
  config.data.augment.update(rotation=0.0, shift=0.0)  # ...and so does the affine warp.
  config.model_kwargs = {'features': (4, 8), 'hidden': 16}
  config.batch_size = 32
  config.eval_batch_size = 64
  config.num_steps = 4
  workdir = str(tmp / 'run')
  classify.train_and_evaluate(config, workdir)
  return config, workdir


def _write_test_images(config, folder):
  """The first eval examples as 8x8 PNG files; returns their paths and labels."""
  builder = tfds.builder(config.data.dataset, data_dir=config.data.data_dir)
  examples = builder.as_dataset(split=config.data.eval_split, shuffle_files=False)
  os.makedirs(folder)
  paths, labels = [], []
  for i, example in enumerate(examples.take(NUM_IMAGES).as_numpy_iterator()):
    paths.append(os.path.join(folder, f'{i:02d}.png'))
    Image.fromarray(example['image'][..., 0]).save(paths[-1])
    labels.append(example['label'])
  return paths, np.array(labels)


def test_files_get_the_probabilities_of_the_eval_batch(trained_run, tmp_path, capsys):
  config, workdir = trained_run
  paths, labels = _write_test_images(config, str(tmp_path / 'images'))
  classifier = trained.load_classifier(workdir)
  images = predict.load_images(classifier, paths)
  # A padded last batch.
  got = predict.probabilities(classifier.model, classifier.variables, images, batch_size=5)

  batch = next(input_pipeline.make_eval_iterator(config.data, global_batch_size=64))
  np.testing.assert_array_equal(batch['label'][:NUM_IMAGES], labels)
  np.testing.assert_allclose(images, batch['image'][:NUM_IMAGES], atol=1e-5)
  logits = classifier.model.apply(classifier.variables, batch['image'][:NUM_IMAGES], train=False)
  np.testing.assert_allclose(got, jax.nn.softmax(logits), atol=1e-5)
  assert got.shape == (NUM_IMAGES, 10)

  predict.main(['--workdir', workdir, '--top_k', '2', str(tmp_path / 'images')])
  lines = capsys.readouterr().out.splitlines()
  assert len(lines) == NUM_IMAGES
  for line, path, p in zip(lines, paths, got):
    first, second = np.argsort(-p)[:2]
    assert line == (f'{path}: {classifier.info.class_names[first]} {p[first]:.4f}, '
                    f'{classifier.info.class_names[second]} {p[second]:.4f}')


def test_an_array_is_preprocessed_like_its_file(trained_run, tmp_path):
  config, _ = trained_run
  image = np.random.default_rng(0).integers(0, 256, (20, 10, 3), np.uint8)  # RGB, larger.
  Image.fromarray(image).save(tmp_path / 'rgb.png')
  from_file = input_pipeline.preprocess_for_prediction(
      config.data, (tmp_path / 'rgb.png').read_bytes())
  from_array = input_pipeline.preprocess_for_prediction(config.data, image)
  assert from_file.shape == (12, 12, 1) and from_file.dtype == np.float32
  np.testing.assert_array_equal(from_array, from_file)


def test_user_errors_name_what_is_wrong(trained_run, tmp_path, capsys):
  _, workdir = trained_run
  image = str(tmp_path / 'digit.png')
  Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
  with pytest.raises(UserError, match='does not exist'):
    predict.predict(str(tmp_path / 'missing'), [image])
  (tmp_path / 'empty_run').mkdir()
  with pytest.raises(UserError, match='config.json not found'):
    predict.predict(str(tmp_path / 'empty_run'), [image])
  (tmp_path / 'untrained').mkdir()
  (tmp_path / 'untrained' / 'config.json').write_text(
      open(os.path.join(workdir, 'config.json'), encoding='utf-8').read())
  with pytest.raises(UserError, match='holds no checkpoint'):
    predict.predict(str(tmp_path / 'untrained'), [image])
  (tmp_path / 'broken.png').write_bytes(b'not an image')
  with pytest.raises(UserError, match='broken.png: not a readable image'):
    predict.predict(workdir, [image, str(tmp_path / 'broken.png')])
  (tmp_path / 'no_images').mkdir()
  (tmp_path / 'no_images' / 'notes.txt').write_text('hello')
  with pytest.raises(UserError, match='no images'):
    predict.predict(workdir, [str(tmp_path / 'no_images')])

  with pytest.raises(SystemExit) as exit_info:
    predict.main(['--workdir', workdir, str(tmp_path / 'nowhere.png')])
  assert exit_info.value.code == 2
  message = f'error: {tmp_path / "nowhere.png"}: no such file or folder.'
  assert capsys.readouterr().err.strip() == message
