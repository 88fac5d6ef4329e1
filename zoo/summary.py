"""A per-layer table of a model, as Keras' `model.summary()`: `python -m zoo.summary resnet50`.

One row per module down to `depth` levels, in call order: its path, class, output shape and
parameter count (its own and its submodules'). Computed from shapes only (`jax.eval_shape`), so
it costs no FLOPs and no memory even for large models. (flax's `nn.tabulate` lists every
parameter leaf over several lines per module, too long for a ResNet-50; this keeps one line.)
"""

import argparse
import math
import sys
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from zoo.registry import create_model, model_info


def _count(tree: Any) -> int:
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


def _subtree(tree: Any, path: Sequence[str]) -> Any:
  for name in path:
    tree = tree.get(name, {}) if isinstance(tree, dict) else {}
  return tree


def _shape(out: Any) -> str:
  shapes = [str(tuple(leaf.shape)) for leaf in jax.tree.leaves(out)]
  return shapes[0] if len(shapes) == 1 else ', '.join(shapes)


def summary(model: nn.Module, input_shape: Sequence[int], depth: int = 1,
            title: str | None = None) -> str:
  """The table of `model` on one input of `input_shape` (H, W, C or latent size)."""
  x = jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)
  rngs = {'params': jax.random.key(0), 'dropout': jax.random.key(0),
          'sample': jax.random.key(0)}
  variables = jax.eval_shape(lambda x: model.init(rngs, x, train=False), x)
  rows: list[Any] = []

  def record(next_fun, args, kwargs, context):
    path = context.module.scope.path
    if context.method_name != '__call__' or len(path) > depth:
      return next_fun(*args, **kwargs)
    index = len(rows)
    rows.append(None)  # keep call order: a parent's row before its children's
    out = next_fun(*args, **kwargs)
    rows[index] = (path, type(context.module).__name__, out)
    return out

  with nn.intercept_methods(record):
    jax.eval_shape(lambda v, x: model.apply(v, x, train=False, rngs=rngs), variables, x)
  params = variables.get('params', {})
  table = [('layer', 'module', 'output shape', 'params')]
  for path, kind, out in rows:
    table.append(('/'.join(path) or '(model)', kind, _shape(out),
                  f'{_count(_subtree(params, path)):,}'))
  widths = [max(len(row[i]) for row in table) for i in range(4)]
  lines = [title or type(model).__name__, f'input {tuple(x.shape)}']
  for i, row in enumerate(table):
    lines.append('  '.join([*(c.ljust(w) for c, w in zip(row[:3], widths)),
                            row[3].rjust(widths[3])]))
    if i == 0:
      lines.append('-' * len(lines[-1]))
  trainable = _count(params)
  frozen = _count({k: v for k, v in variables.items() if k != 'params'})
  lines += ['-' * len(lines[2]),
            (f'parameters: {trainable:,} trainable ({trainable * 4 / 2**20:.1f} MiB in float32), '
             f'{frozen:,} non-trainable (BatchNorm statistics)')]
  return '\n'.join(lines)


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(prog='python -m zoo.summary', description=__doc__.split('\n')[0])
  parser.add_argument('model', help='a registered model name (see zoo.list_models())')
  parser.add_argument('--depth', type=int, default=1, help='levels of submodules to list')
  parser.add_argument('--input-shape', help='H,W,C instead of the model\'s default')
  args = parser.parse_args(argv)
  try:
    info = model_info(args.model)
    shape = (tuple(int(s) for s in args.input_shape.split(',')) if args.input_shape
             else info.input_shape)
  except ValueError as e:
    parser.error(str(e).split('\n')[0])
  print(summary(create_model(args.model), shape, args.depth,
                f'{args.model}: {info.description}'))


if __name__ == '__main__':
  sys.exit(main())
