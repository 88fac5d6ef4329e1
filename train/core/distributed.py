"""Starting JAX on several processes: by hand with flags, or detected on a TPU pod, Slurm or MPI."""

import argparse
import os

import jax

from train.core.errors import UserError


def add_flags(parser: argparse.ArgumentParser) -> None:
  group = parser.add_argument_group('multi-process (omit on one machine, a TPU pod or Slurm)')
  group.add_argument('--coordinator_address', help='HOST:PORT of process 0, reachable by all')
  group.add_argument('--num_processes', type=int, help='how many processes take part')
  group.add_argument('--process_id', type=int, help='this process, 0 .. num_processes-1')


def launched_on_cluster(env=os.environ) -> bool:
  """Whether a cluster launcher started several processes that jax can discover by itself."""
  return (int(env.get('SLURM_NTASKS', '1')) > 1
          or int(env.get('OMPI_COMM_WORLD_SIZE', '1')) > 1
          or ',' in env.get('TPU_WORKER_HOSTNAMES', ''))  # a TPU slice of several hosts


def initialize(args: argparse.Namespace) -> None:
  """Calls `jax.distributed.initialize` when the flags or the environment ask for it."""
  by_hand = (args.coordinator_address, args.num_processes, args.process_id)
  if any(v is not None for v in by_hand) and not all(v is not None for v in by_hand):
    raise UserError('--coordinator_address, --num_processes and --process_id go together; '
                    'give all three or none')
  if not (args.coordinator_address or launched_on_cluster()):
    return
  # CPU processes exchange arrays through gloo; accelerators ignore this setting.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  if args.coordinator_address:
    if not 0 <= args.process_id < args.num_processes:
      raise UserError(f'--process_id={args.process_id} must be in 0..{args.num_processes - 1}')
    jax.distributed.initialize(args.coordinator_address, num_processes=args.num_processes,
                               process_id=args.process_id)
  else:
    jax.distributed.initialize()
