"""Errors a user can fix: entry points print their message in one line, with no traceback."""

import errno

# A full disk, a read-only file system, missing permissions: a person fixes these, not the code.
USER_FIXABLE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


class UserError(Exception):
  """Bad input (a config field, a dataset, a file). The message names it and says what to do."""


class TrainingDiverged(UserError):
  """A loss or metric became NaN or infinite: the hyperparameters are bad, not the input files."""
