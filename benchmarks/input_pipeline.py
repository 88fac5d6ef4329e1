"""The classify training loop on real batches against the same loop on synthetic batches already
on the device: how much of the step rate the input pipeline costs.

    python benchmarks/input_pipeline.py                      # digits and a JPEG folder at 224
    python benchmarks/input_pipeline.py --only jpeg --jpeg_steps 40

Both runs go through `train.core.loop.train_loop` (device prefetch, metrics to the host every
`log` steps, progress, a final checkpoint) with the same compiled step; the synthetic one is fed
one batch of the real pipeline, put on the devices once and repeated. The rate is the steps
between the first and the last logged step over the time between them, so compiling, filling the
pipeline and the final save are left out. Real and synthetic runs alternate, round after round,
so that a change in the machine's load hits both; the table gives the median over rounds, and the
batches per second the pipeline gives alone (no step running): when that is far above the
synthetic rate yet real < synthetic, the pipeline is not too slow but takes CPU from the step.

  digits   configs/digits_cnn.py as the quickstart trains it (16x16, rotation and shift)
  jpeg     a folder of 300 JPEGs (random crops of scikit-learn's two sample photos, 2 classes)
           decoded, resized to 224x224 and flipped by the pipeline, for --jpeg_model
"""

import argparse
import contextlib
import io
import itertools
import os
import statistics
import tempfile
import time

import jax
import numpy as np

from configs import classify_base, digits_cnn
from train import classify
from train.core import loop, parallel
from train.core.checkpoint import Checkpointer
from train.core.task import Length, StepContext, state_step
from train.core.writer import MetricWriter

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def make_jpeg_folder(root: str, per_class: int = 150, side: int = 256) -> str:
  """`root/<photo>/<i>.jpg`: random square crops of each sample photo, flipped at random."""
  from PIL import Image
  from sklearn.datasets import load_sample_images

  photos = load_sample_images()
  rng = np.random.default_rng(0)
  for name, photo in zip(('china', 'flower'), photos.images):
    os.makedirs(os.path.join(root, name), exist_ok=True)
    height, width = photo.shape[:2]
    for i in range(per_class):
      crop = int(rng.integers(side * 3 // 4, min(height, width) + 1))
      top, left = rng.integers(0, height - crop + 1), rng.integers(0, width - crop + 1)
      image = Image.fromarray(photo[top:top + crop, left:left + crop]).resize((side, side))
      if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
      image.save(os.path.join(root, name, f'{i:04d}.jpg'), quality=90)
  return root


def digits_config(data_dir: str):
  config = digits_cnn.get_config()
  config.data.data_dir = data_dir
  return config


def jpeg_config(folder: str, model: str, batch_size: int):
  config = classify_base.get_config()
  config.model = model
  config.data.dataset = f'folder:{folder}'
  config.data.image_size = (224, 224)
  config.data.normalization = 'per_channel'
  config.data.mean, config.data.std = IMAGENET_MEAN, IMAGENET_STD
  config.data.augment.flip = True
  config.batch_size = batch_size
  return config


class _OnDevice(parallel.JitParallelism):
  """Batches that are already global arrays on the mesh pass through untouched."""

  def shard_batch(self, batch):
    return batch


def loop_rate(config, batches, parallelism, steps: int, log_every: int, workdir: str) -> float:
  """Steps per second of `train_loop` between its first and last logged step."""
  task = classify.ClassifyTask(config)
  info = task.pipeline.get_dataset_info(config.data)
  steps_per_epoch = max(1, info.num_train // config.batch_size)
  task.build(info, Length(steps, steps_per_epoch), StepContext())
  mesh = parallelism.mesh
  state = jax.jit(task.init, out_shardings=parallel.replicated(mesh))(jax.random.key(0))
  train_fn = parallelism.compile(
      lambda s, b, r: task.train_step(s, b, jax.random.fold_in(r, state_step(s))),
      donate_state=True)
  logged = []
  checkpointer = Checkpointer(workdir, keep=1, best_metric='accuracy')
  writer = MetricWriter(workdir)
  try:
    with contextlib.redirect_stdout(io.StringIO()):
      loop.train_loop(
          state, start_step=0, cadence=loop.Cadence(steps, log_every, steps, steps),
          train_fn=train_fn, batches=batches, mesh=mesh, rng=jax.random.key(1),
          evaluate=lambda state, step: {'accuracy': 0.0, 'loss': 0.0},
          checkpointer=checkpointer, writer=writer, parallelism=parallelism,
          on_log=lambda step, means: logged.append((step, time.perf_counter())))
  finally:
    checkpointer.close()
    writer.close()
  (first, start), (last, end) = logged[0], logged[-1]
  return (last - first) / (end - start)


def pipeline_rate(batches, count: int) -> float:
  """Batches per second the pipeline gives alone, after its first batch (which fills it)."""
  next(batches)
  start = time.perf_counter()
  for _ in range(count):
    next(batches)
  return count / (time.perf_counter() - start)


def compare(name: str, config, steps: int, log_every: int, rounds: int, tmp: str) -> dict:
  mesh = parallel.make_mesh()
  pipeline = classify.ClassifyTask.pipeline
  real_batches = lambda: pipeline.make_train_iterator(
      config.data, seed=config.seed, global_batch_size=config.batch_size)
  on_device = parallel.shard_batch(next(real_batches()), mesh)
  rates = {'real': [], 'synthetic': []}
  for r in range(rounds):
    for kind in ('real', 'synthetic') if r % 2 == 0 else ('synthetic', 'real'):
      batches, parallelism = ((real_batches(), parallel.JitParallelism(mesh)) if kind == 'real'
                              else (itertools.repeat(on_device), _OnDevice(mesh)))
      workdir = os.path.join(tmp, f'{name}_{kind}_{r}')
      rates[kind].append(loop_rate(config, batches, parallelism, steps, log_every, workdir))
      print(f'{name} round {r + 1} {kind}: {rates[kind][-1]:.2f} steps/s', flush=True)
  real, synthetic = (statistics.median(rates[k]) for k in ('real', 'synthetic'))
  alone = pipeline_rate(real_batches(), steps)
  return dict(name=name, batch=config.batch_size, model=config.model, real=real,
              synthetic=synthetic, alone=alone)


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--only', choices=('digits', 'jpeg'), default=None)
  parser.add_argument('--rounds', type=int, default=2)
  parser.add_argument('--digits_steps', type=int, default=300)
  parser.add_argument('--jpeg_steps', type=int, default=30)
  parser.add_argument('--jpeg_model', default='mobilenet_v3_small')
  parser.add_argument('--jpeg_batch', type=int, default=32)
  args = parser.parse_args()
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    if args.only in (None, 'digits'):
      rows.append(compare('digits', digits_config(os.path.join(tmp, 'tfds')),
                          args.digits_steps, 50, args.rounds, tmp))
    if args.only in (None, 'jpeg'):
      folder = make_jpeg_folder(os.path.join(tmp, 'jpegs'))
      config = jpeg_config(folder, args.jpeg_model, args.jpeg_batch)
      rows.append(compare('jpeg', config, args.jpeg_steps, 5, args.rounds, tmp))
  load = ', '.join(f'{x:.1f}' for x in os.getloadavg())
  print(f'train_loop steps/s, median of {args.rounds} rounds; {jax.device_count()} '
        f'{jax.devices()[0].platform} device(s), {os.cpu_count()} CPUs, load average {load} '
        '(1, 5, 15 min) at the end')
  print(f'  {"data":<8} {"model":<20} {"batch":>5} {"real":>8} {"synthetic":>10} '
        f'{"real/synth":>10} {"pipeline alone":>15}')
  for row in rows:
    print(f'  {row["name"]:<8} {row["model"]:<20} {row["batch"]:5d} {row["real"]:8.2f} '
          f'{row["synthetic"]:10.2f} {row["real"] / row["synthetic"]:10.1%} '
          f'{row["alone"]:15.2f}')


if __name__ == '__main__':
  main()
