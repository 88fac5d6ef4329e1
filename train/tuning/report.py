"""What a search leaves for people: the trials table (console and CSV), the best trial's test
figure and command line, and Optuna's plots as PNG."""

import csv
import json
import logging
import os
import shlex

import optuna

# Trial user attributes, set by train.tune.
WORKDIR, TEST, STEP, COMMAND = 'workdir', 'test_metric', 'last_step', 'command'


def finished(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
  """Completed and pruned trials, best validation value first."""
  trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,
                                    optuna.trial.TrialState.PRUNED))
  sign = -1 if _maximize(study) else 1
  key = lambda t: (sign * v if (v := _value(t, _maximize(study))) is not None else float('inf'))
  return sorted(trials, key=key)


def _maximize(study: optuna.Study) -> bool:
  return study.direction == optuna.study.StudyDirection.MAXIMIZE


def _value(trial: optuna.trial.FrozenTrial, maximize: bool) -> float | None:
  """A completed trial's value; a pruned one's best reported value."""
  if trial.value is not None:
    return trial.value
  return (max if maximize else min)(trial.intermediate_values.values(), default=None)


def best_validation(workdir: str, metric: str, maximize: bool) -> float:
  """The best validation `metric` of a finished run's evaluations, as its metrics.jsonl has
  them (a resumed run's file holds the evaluations from before the restart too)."""
  with open(os.path.join(workdir, 'metrics.jsonl'), encoding='utf-8') as f:
    scores = [r[metric] for r in map(json.loads, f) if r['split'] == 'validation']
  return (max if maximize else min)(scores)


def table(study: optuna.Study, metric: str) -> list[dict[str, object]]:
  rows = []
  for trial in finished(study):
    value = _value(trial, _maximize(study))
    rows.append({
        'trial': trial.number,
        'state': trial.state.name.lower(),
        f'validation_{metric}': None if value is None else round(value, 4),
        f'test_{metric}': trial.user_attrs.get(TEST),
        'steps': trial.user_attrs.get(STEP),
        'seconds': round(trial.duration.total_seconds()) if trial.duration else None,
        **trial.params,
        'workdir': trial.user_attrs.get(WORKDIR),
    })
  return rows


def write(study: optuna.Study, metric: str, workdir: str) -> str:
  """Writes WORKDIR/trials.csv and the plots; returns the text to print."""
  rows = table(study, metric)
  if not rows:
    return 'no trial has finished yet.'
  path = os.path.join(workdir, 'trials.csv')
  columns = list(dict.fromkeys(key for row in rows for key in row))
  with open(path, 'w', newline='', encoding='utf-8') as f:
    writer = csv.DictWriter(f, columns)
    writer.writeheader()
    writer.writerows(rows)
  lines = [_format_table(rows, columns[:-1]), f'(also in {path})']
  complete = [t for t in finished(study) if t.state == optuna.trial.TrialState.COMPLETE]
  if complete:
    best = complete[0]
    where = f', in {best.user_attrs[WORKDIR]}' if WORKDIR in best.user_attrs else ''
    lines.append(f'Best trial {best.number}: validation {metric} {best.value:.4f}, test '
                 f'{metric} {best.user_attrs.get(TEST, float("nan")):.4f} (best validation '
                 f'checkpoint{where}).')
    lines.append('Reproduce it: ' + best.user_attrs[COMMAND])
  lines += plot(study, workdir)
  return '\n'.join(lines)


def command(module: str, config_spec: str, workdir: str, overrides: list[str]) -> str:
  return shlex.join(['python', '-m', module, '--config', config_spec, '--workdir', workdir,
                     *overrides])


def _format_table(rows: list[dict[str, object]], columns: list[str]) -> str:
  text = [[c for c in columns]] + [[_cell(row.get(c)) for c in columns] for row in rows]
  widths = [max(len(r[i]) for r in text) for i in range(len(columns))]
  return '\n'.join('  '.join(cell.ljust(w) for cell, w in zip(r, widths)) for r in text)


def _cell(value: object) -> str:
  if value is None:
    return '-'
  if isinstance(value, float):
    return f'{value:.4g}'
  return str(value)


def plot(study: optuna.Study, workdir: str) -> list[str]:
  """Optimization history, parameter importances and parallel coordinates as PNGs in
  WORKDIR/plots; a line per plot that could not be drawn (too few trials, no matplotlib)."""
  try:
    import matplotlib  # pylint: disable=import-outside-toplevel  (the `tune` extra)
    matplotlib.use('Agg')
    from matplotlib import pyplot  # pylint: disable=import-outside-toplevel
    from optuna.visualization import matplotlib as optuna_plots  # pylint: disable=import-outside-toplevel
  except ImportError:
    return ["no plots: install matplotlib (pip install 'zoo[tune]')."]
  folder = os.path.join(workdir, 'plots')
  os.makedirs(folder, exist_ok=True)
  lines = []
  logging.getLogger('optuna').setLevel(logging.ERROR)  # "experimental" warnings per plot
  for name, draw in (('optimization_history', optuna_plots.plot_optimization_history),
                     ('param_importances', optuna_plots.plot_param_importances),
                     ('parallel_coordinate', optuna_plots.plot_parallel_coordinate)):
    try:
      axes = draw(study)
    except (ValueError, RuntimeError, ZeroDivisionError) as e:
      lines.append(f'no {name} plot: {e}')
      continue
    figure = axes.flat[0].figure if hasattr(axes, 'flat') else axes.figure
    figure.savefig(os.path.join(folder, f'{name}.png'), dpi=100, bbox_inches='tight')
    pyplot.close(figure)
  lines.append(f'Plots in {folder}')
  return lines
