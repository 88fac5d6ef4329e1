"""JAX's persistent compilation cache, on by default, so a rerun or a resume skips compiling.

The programs go to `$XDG_CACHE_HOME/zoo/jax` (`~/.cache/zoo/jax` when XDG_CACHE_HOME is unset),
or to JAX_COMPILATION_CACHE_DIR when that is set. `config.compilation_cache=False` or the
environment variable ZOO_COMPILATION_CACHE=0 turns it off. The cache runs what it holds: keep it
in a directory only you can write to (JAX's own warning).
"""

import os
from typing import Mapping

import jax

ENV_SWITCH = 'ZOO_COMPILATION_CACHE'
_OFF = ('0', 'false', 'no', 'off')


def directory(enabled: bool, environ: Mapping[str, str]) -> str | None:
  """Where the cache goes, or None when the config or the environment turns it off."""
  if not enabled or environ.get(ENV_SWITCH, '').strip().lower() in _OFF:
    return None
  if environ.get('JAX_COMPILATION_CACHE_DIR'):
    return environ['JAX_COMPILATION_CACHE_DIR']
  cache_home = environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(cache_home, 'zoo', 'jax')


def enable(enabled: bool = True) -> str | None:
  """Turns the cache on for this process (before its first compilation); returns its directory.

  Every program is cached whatever its compile time, so a rerun compiles none of them: the
  small ones add up too (a digits run compiles a dozen).
  """
  path = directory(enabled, os.environ)
  if path is None:
    return None
  jax.config.update('jax_compilation_cache_dir', path)
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  jax.config.update('jax_persistent_cache_min_entry_size_bytes', -1)
  return path
