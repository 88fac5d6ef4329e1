"""Time to the first training step of the README quickstart: fresh, with a warm compilation
cache, and a resume.

    python benchmarks/startup.py                    # this checkout
    python benchmarks/startup.py --repo OTHER_TREE  # another checkout, e.g. an older commit

Runs `python -m train.classify --config configs/digits_cnn.py` in a subprocess, logging every
step, and takes the time from starting the process to the first progress line (`step N/...`,
printed once that step's metrics are back on the host); then stops the run with SIGTERM, which
saves a checkpoint at that step, so the next run resumes. Every run uses one temporary TFDS
data_dir, prepared by an untimed first run, and a temporary compilation cache. Scenarios, in order:

  fresh, no cache        a new workdir, ZOO_COMPILATION_CACHE=0
  fresh, cold cache      a new workdir, an empty cache (which it fills)
  fresh, warm cache      a new workdir, the cache the previous run filled
  resume, warm cache     the previous workdir again
  resume, no cache       the same, ZOO_COMPILATION_CACHE=0

The machine's load average is printed with the table: compilation and imports are CPU-bound.
"""

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCENARIOS = (('fresh, no cache', 'fresh', False), ('fresh, cold cache', 'fresh', True),
             ('fresh, warm cache', 'fresh', True), ('resume, warm cache', 'resume', True),
             ('resume, no cache', 'resume', False))


def time_to_first_step(repo: str, workdir: str, data_dir: str, env: dict[str, str],
                       timeout: float) -> float:
  """Seconds from process start to the first progress line; the run is then stopped."""
  command = [sys.executable, '-m', 'train.classify', '--config', 'configs/digits_cnn.py',
             '--workdir', workdir, f'--config.data.data_dir={data_dir}',
             '--config.log_every_steps=1']
  start = time.perf_counter()
  process = subprocess.Popen(command, cwd=repo, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
  output = []
  try:
    for line in process.stdout:
      output.append(line)
      if line.startswith('step '):
        elapsed = time.perf_counter() - start
        process.send_signal(signal.SIGTERM)  # saves a checkpoint at this step and exits
        process.communicate(timeout=timeout)
        return elapsed
      if time.perf_counter() - start > timeout:
        break
  finally:
    if process.poll() is None:
      process.kill()
      process.wait()
  raise SystemExit(f'no step within {timeout} s; the run printed:\n{"".join(output[-20:])}')


def environment(repo: str, cache_dir: str | None) -> dict[str, str]:
  env = dict(os.environ, PYTHONPATH=repo, JAX_PLATFORMS='cpu')
  env.pop('JAX_COMPILATION_CACHE_DIR', None)
  if cache_dir is None:
    env['ZOO_COMPILATION_CACHE'] = '0'
  else:
    env['ZOO_COMPILATION_CACHE'] = '1'
    env['XDG_CACHE_HOME'] = cache_dir
  return env


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--repo', default=REPO, help='the checkout to run (default: this one)')
  parser.add_argument('--timeout', type=float, default=900.0)
  args = parser.parse_args()
  repo = os.path.abspath(args.repo)
  with tempfile.TemporaryDirectory() as tmp:
    data_dir, cache = os.path.join(tmp, 'tfds'), os.path.join(tmp, 'cache')
    time_to_first_step(repo, os.path.join(tmp, 'prepare'), data_dir,
                       environment(repo, None), args.timeout)  # builds the dataset, untimed
    rows, workdir = [], None
    for i, (name, kind, cached) in enumerate(SCENARIOS):
      if kind == 'fresh':
        workdir = os.path.join(tmp, f'run{i}')
      seconds = time_to_first_step(repo, workdir, data_dir,
                                   environment(repo, cache if cached else None), args.timeout)
      rows.append((name, seconds))
      print(f'{name}: {seconds:.1f} s', file=sys.stderr, flush=True)
  load = ', '.join(f'{x:.1f}' for x in os.getloadavg())
  print(f'{repo}: time to the first step of configs/digits_cnn.py; {os.cpu_count()} CPUs, '
        f'load average {load} (1, 5, 15 min) at the end')
  print(f'  {"scenario":<20} {"seconds":>8}')
  for name, seconds in rows:
    print(f'  {name:<20} {seconds:8.1f}')


if __name__ == '__main__':
  main()
