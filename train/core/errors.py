"""Errors a user can fix: entry points print their message in one line, with no traceback."""


class UserError(Exception):
  """Bad input (a config field, a dataset, a file). The message names it and says what to do."""


class TrainingDiverged(UserError):
  """A loss or metric became NaN or infinite: the hyperparameters are bad, not the input files."""
