"""Training-step throughput of train.classify on N devices (examples per second).

    JAX_NUM_CPU_DEVICES=1 python benchmarks/step_throughput.py
    JAX_NUM_CPU_DEVICES=4 python benchmarks/step_throughput.py

Times the compiled data-parallel step alone (no input pipeline) on random batches, after a
warm-up, for a global batch that stays fixed as the device count changes.
"""

import argparse
import functools
import time

import jax
import numpy as np

import zoo
from configs import common
from train import classify
from train.core import optim, parallel
from train.core.state import create_train_state, init_on_mesh
from train.core.task import StepContext


def main():
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('--model', default='cnn')
  parser.add_argument('--batch_size', type=int, default=128)
  parser.add_argument('--image_size', type=int, default=16)
  parser.add_argument('--steps', type=int, default=20)
  parser.add_argument('--parallelism', default='jit', choices=('jit', 'pmap'))
  args = parser.parse_args()

  mesh = parallel.make_mesh()
  parallelism = parallel.make_parallelism(args.parallelism, mesh)
  model = zoo.create_model(args.model, num_classes=10)
  if hasattr(model, 'bn_axis_name'):
    model = model.clone(bn_axis_name=parallelism.axis_name)
  tx = optim.make_optimizer(common.optim(), 1000, 100)
  shape = (args.image_size, args.image_size, 3)
  state, _ = init_on_mesh(functools.partial(create_train_state, model, tx, input_shape=shape),
                          jax.random.key(0), parallel.replicated(mesh))
  state = parallelism.put_state(state)
  step = parallelism.compile(
      functools.partial(classify.train_step, label_smoothing=0.0,
                        ctx=StepContext(axis_name=parallelism.axis_name)),
      donate_state=True, with_rng=True)
  rng = np.random.default_rng(0)
  batch = parallelism.shard_batch({
      'image': rng.random((args.batch_size, *shape), np.float32),
      'label': rng.integers(0, 10, args.batch_size).astype(np.int32)})
  key = jax.random.key(1)
  for _ in range(3):  # compile and warm up
    state, metrics = step(state, batch, key)
  jax.block_until_ready(metrics)
  start = time.perf_counter()
  for _ in range(args.steps):
    state, metrics = step(state, batch, key)
  jax.block_until_ready(metrics)
  seconds = (time.perf_counter() - start) / args.steps
  print(f'{args.model} {args.parallelism} on {jax.device_count()} device(s), global batch '
        f'{args.batch_size}: {1 / seconds:.2f} steps/s, {args.batch_size / seconds:.0f} '
        f'examples/s')


if __name__ == '__main__':
  main()
