"""Population training against sequential trials: trials per hour for the digits CNN on this CPU.

    python benchmarks/population.py [--trials 4] [--steps 200]

K trials of (learning rate, weight decay, label smoothing), drawn once at random, are trained
twice for `--steps` steps on the digits recipe (validation split held out of train): one after
another, each its own compiled program and input pipeline as a sequential search runs them,
and as one population (train.tuning.population). Both count compilation, data and evaluation.
Prints the wall time and trials per hour of each, their ratio, and each trial's best validation
accuracy both ways (equal up to float rounding: the same computation).
"""

import argparse
import time

import numpy as np

from configs import digits_cnn
from train.tuning import population


def _config(steps: int):
  config = digits_cnn.get_config()
  config.num_steps = steps
  config.eval_every_epochs = 5.0
  return config


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--trials', type=int, default=4)
  parser.add_argument('--steps', type=int, default=200)
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  values = dict(learning_rate=10 ** rng.uniform(-3.5, -2, args.trials),
                weight_decay=10 ** rng.uniform(-6, -2, args.trials),
                label_smoothing=rng.uniform(0, 0.2, args.trials))
  config = _config(args.steps)
  start = time.perf_counter()
  sequential = [population.train(config, population.Population.of(
      config, **{name: v[k:k + 1] for name, v in values.items()}))[0]
                for k in range(args.trials)]
  sequential_s = time.perf_counter() - start
  start = time.perf_counter()
  together = population.train(config, population.Population.of(config, **values))
  population_s = time.perf_counter() - start
  per_hour = lambda seconds: args.trials * 3600 / seconds
  print(f'{args.trials} trials of {args.steps} steps (batch {config.batch_size}) of the digits '
        'CNN:')
  print(f'  sequential: {sequential_s:.1f} s, {per_hour(sequential_s):.0f} trials/hour')
  print(f'  population: {population_s:.1f} s, {per_hour(population_s):.0f} trials/hour')
  print(f'  ratio (population / sequential trials per hour): {sequential_s / population_s:.2f}')
  for k in range(args.trials):
    print(f'  trial {k}: lr {values["learning_rate"][k]:.2e} wd {values["weight_decay"][k]:.1e} '
          f'ls {values["label_smoothing"][k]:.2f}: best validation accuracy sequential '
          f'{sequential[k]["accuracy"]:.4f} (step {sequential[k]["step"]}), population '
          f'{together[k]["accuracy"]:.4f} (step {together[k]["step"]})')


if __name__ == '__main__':
  main()
