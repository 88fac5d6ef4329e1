"""The workdir of a run: checked usable before any work, and held by one run at a time.

`WORKDIR/lock` names its holder (host and pid). The lock itself is an `fcntl.flock` on that
file, which the kernel releases when the holder dies however it dies, so a lock left by a
killed run is detected (it can be taken) and taken over. In a multi-process run process 0 holds
it for all. A workdir this run created and left empty (its config was refused) is removed.
"""

import contextlib
import fcntl
import json
import os
import socket
import tempfile
from typing import Iterator

import jax

from train.core.errors import UserError

LOCK_FILE = 'lock'


def check_usable(workdir: str) -> None:
  """UserError unless `workdir` is (or can be made) a folder this process can write in."""
  path = os.path.abspath(workdir)
  if os.path.exists(path) and not os.path.isdir(path):
    raise UserError(f'--workdir {workdir}: a file is in the way; give a folder (new or the '
                    'workdir of a run).')
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
    raise UserError(f'--workdir {workdir}: {existing} is not writable; give a folder you can '
                    'write in.')
  if existing == path:
    # Permissions say little on read-only mounts and for root: try a real write.
    try:
      with tempfile.TemporaryFile(dir=path):
        pass
    except OSError as e:
      raise UserError(f'--workdir {workdir}: cannot write there ({e.strerror}); give a folder '
                      'you can write in.') from None


@contextlib.contextmanager
def hold(workdir: str) -> Iterator[None]:
  """Holds WORKDIR/lock for the block (on process 0); UserError naming the holder if busy."""
  if jax.process_index() != 0:
    yield
    return
  created = _first_missing(os.path.abspath(workdir))
  os.makedirs(workdir, exist_ok=True)
  fd = _acquire(os.path.join(workdir, LOCK_FILE))
  try:
    yield
  finally:
    os.unlink(os.path.join(workdir, LOCK_FILE))
    os.close(fd)  # releases the flock
    if created:
      _remove_empty_folders(created)


def _first_missing(path: str) -> str | None:
  """The outermost folder of `path` that does not exist yet (None if it all does)."""
  missing = None
  while not os.path.exists(path):
    missing, path = path, os.path.dirname(path)
  return missing


def _remove_empty_folders(top: str) -> None:
  """Removes the folders under `top` (and `top`) that hold no file: a run refused before its
  first write leaves nothing behind, and nothing written is ever removed."""
  for root, _, _ in sorted(os.walk(top), key=lambda walked: -len(walked[0])):
    with contextlib.suppress(OSError):  # not empty
      os.rmdir(root)


def _acquire(path: str) -> int:
  while True:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _describe(os.read(fd, 4096))
      os.close(fd)
      raise UserError(f'{os.path.dirname(path)} is in use by another run ({holder}): wait for '
                      'it to finish or stop it, or give another --workdir.') from None
    # The holder before us may have removed the file between our open and our lock: retry on
    # the file now at `path`.
    if os.path.exists(path) and os.stat(path).st_ino == os.fstat(fd).st_ino:
      break
    os.close(fd)
  left = os.read(fd, 4096)
  if left:
    print(f'Taking over the lock of {path}, left by a run that is no longer running '
          f'({_describe(left)}).', flush=True)
  os.ftruncate(fd, 0)
  os.pwrite(fd, json.dumps({'host': socket.gethostname(), 'pid': os.getpid()}).encode(), 0)
  return fd


def _describe(content: bytes) -> str:
  try:
    holder = json.loads(content)
    return f'host {holder["host"]}, pid {holder["pid"]}'
  except (ValueError, KeyError, TypeError):
    return 'holder unknown'
