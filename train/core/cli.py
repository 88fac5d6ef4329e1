"""The command line shared by every entry point: config, overrides, workdir and multi-host flags.

    python -m train.<task> --config configs/<recipe>.py[:arg] --workdir DIR \
        [--config.field=value ...]
        [--coordinator_address HOST:PORT --num_processes N --process_id I]

Problems a user can fix (`UserError`) are printed as one line and exit with status 2.
"""

import argparse
import sys
from typing import Callable, Sequence

import ml_collections

from train.core import distributed
from train.core.config import apply_overrides, load_config, split_overrides
from train.core.errors import USER_FIXABLE_ERRNOS, UserError
from train.core.interrupt import Interrupted
from train.core.run import run as run_task
from train.core.task import Task

EXIT_USER_ERROR = 2


def parse_args(argv: Sequence[str], description: str
               ) -> tuple[ml_collections.ConfigDict, argparse.Namespace]:
  """The config with its overrides applied, and the other flags."""
  rest, overrides = split_overrides(argv)
  parser = argparse.ArgumentParser(description=description)
  parser.add_argument('--config', required=True,
                      help='recipe file, e.g. configs/digits_cnn.py (optionally file.py:arg)')
  parser.add_argument('--workdir', required=True,
                      help='directory for checkpoints, metrics.jsonl and TensorBoard events; '
                           'running again with the same workdir resumes')
  distributed.add_flags(parser)
  args = parser.parse_args(rest)
  config = load_config(args.config)
  apply_overrides(config, overrides)
  return config, args


def run(main: Callable[[ml_collections.ConfigDict, str], object], description: str,
        argv: Sequence[str] | None = None) -> None:
  """Parses the command line, starts multi-host JAX if asked, and calls `main(config, workdir)`."""
  def start():
    config, args = parse_args(sys.argv[1:] if argv is None else argv, description)
    distributed.initialize(args)
    main(config, args.workdir)
  exit_on_user_error(start, 'resume from the latest checkpoint')


def trainer(task_class: type[Task]) -> Callable[..., dict[str, float]]:
  """`train_and_evaluate(config, workdir, **run_kwargs)`: trains a `task_class(config)` through
  `train.core.run.run` and returns the final eval metrics. The run takes the task's config,
  which the task may have completed (e.g. with the input its pretrained weights expect)."""
  def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                         **kwargs) -> dict[str, float]:
    task = task_class(config)
    return run_task(task, task.config, workdir, **kwargs)
  return train_and_evaluate


def exit_on_user_error(start: Callable[[], object], resumes: str) -> None:
  """Calls `start()`; a UserError is printed as one line with exit status 2, an interrupt says
  that running the same command again will `resumes`."""
  try:
    start()
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)
  except Interrupted as e:
    print(f'Stopped by {e}', file=sys.stderr)
    sys.exit(e.exit_status)
  except OSError as e:
    if e.errno not in USER_FIXABLE_ERRNOS:
      raise
    print(f'error: {e.filename or "a file"}: {e.strerror}: free space or fix the permissions, '
          'then run the same command again to resume.', file=sys.stderr)
    sys.exit(EXIT_USER_ERROR)
  except KeyboardInterrupt:
    print(f'interrupted; run the same command again to {resumes}', file=sys.stderr)
    sys.exit(130)
