"""Scores a trained GAN: `python -m train.gan_eval --config configs/<recipe>.py --workdir DIR`.

Restores a checkpoint of the `train.gan` run in DIR (`config.eval.checkpoint`: 'best' by FID,
'latest', or a step number) and prints its FID, Inception Score, class coverage and feature
spread beside those of the real held-out images (the floor), with the protocol: feature network,
numbers of generated and real images, splits, resize policy. Writes them to
`DIR/gan_eval_STEP.json` and the sample grid to `DIR/images/gan_eval_STEP.png`. Set
`--config.eval.num_samples` for the final protocol (e.g. 50000 on CIFAR-10, as in the
literature).
"""

import json
import os
from typing import Any

import jax
import ml_collections

from train import gan
from train.core import cli, loop
from train.core import images as image_lib
from train.core.errors import UserError
from train.core.restore import restore_state
from train.metrics.gan_evaluation import summary_line


def _which(config: ml_collections.ConfigDict, workdir: str) -> str | int:
  """`config.eval.checkpoint` checked: 'best', 'latest', or the step of a saved checkpoint."""
  which = str(config.eval.checkpoint)
  if which in ('best', 'latest'):
    return which
  directory = os.path.join(workdir, 'checkpoints')
  if which.isdigit() and os.path.isdir(os.path.join(directory, which)):
    return int(which)
  raise UserError(f'config.eval.checkpoint={which!r}: use best, latest, or the step of a '
                  f'checkpoint in {os.path.abspath(directory)}')


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Scores the checkpoint `config.eval.checkpoint` of the run in `workdir`; returns the
  scores (the real images' as `*_real`) with 'step' and 'protocol'."""
  task = gan.GanTask(config)
  which = 'latest' if not os.path.isdir(os.path.join(workdir, 'checkpoints')) else _which(
      config, workdir)
  state, step = restore_state(task, workdir, which=which)
  evaluator = task.evaluator
  protocol = evaluator.protocol
  metrics = evaluator.score(state.generator)
  loop.say(f'Checkpoint at step {step} of {workdir}: {summary_line(metrics)}')
  loop.say(f'Protocol: {protocol}')
  if jax.process_index() == 0:
    with open(os.path.join(workdir, f'gan_eval_{step}.json'), 'w', encoding='utf-8') as f:
      json.dump({'step': step, 'protocol': protocol, **metrics}, f, indent=1)
    path = os.path.join(workdir, 'images', f'gan_eval_{step}.png')
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image_lib.save_png(image_lib.make_grid(evaluator.sampler.grid(state.generator),
                                           scale=config.eval.grid_scale), path)
  return {'step': step, 'protocol': protocol, **metrics}


def main(argv: list[str] | None = None) -> None:
  cli.run(evaluate_checkpoint, description=__doc__, argv=argv)


if __name__ == '__main__':
  main()
