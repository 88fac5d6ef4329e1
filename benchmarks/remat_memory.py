"""Peak memory of a train.classify step with and without rematerialized blocks.

    python benchmarks/remat_memory.py                       # resnet50, 224x224, batch 32
    python benchmarks/remat_memory.py --model vit_small_patch16_224 --batch 16

Compiles the train step (SGD with momentum, float32, BatchNorm in train mode) for the model and
for the same model with `remat=True` (`--config.remat=true` in a recipe), on abstract inputs (no
array is allocated), and prints what XLA's memory analysis of each compiled program says: the
arguments (state and batch), the temporaries (chiefly the activations kept for the backward
pass), and the peak: arguments + outputs - the donated (aliased) state + temporaries. It is the
compiler's own buffer plan, the one a run uses.
"""

import argparse
import functools
import time

import jax
import jax.numpy as jnp

import zoo
from configs import common
from train import classify
from train.core import optim
from train.core.state import create_train_state


def compiled_memory(model, batch: int, size: int) -> tuple[dict[str, float], float]:
  """MiB by kind in the compiled step's memory analysis, and the seconds compiling took."""
  tx = optim.make_optimizer(common.optim(name='sgd', schedule='constant'), 100, 10)
  state = jax.eval_shape(functools.partial(create_train_state, model, tx,
                                           input_shape=(size, size, 3)), jax.random.key(0))
  images = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)
  labels = jax.ShapeDtypeStruct((batch,), jnp.int32)
  step = jax.jit(functools.partial(classify.train_step, label_smoothing=0.0), donate_argnums=0)
  start = time.perf_counter()
  compiled = step.lower(state, {'image': images, 'label': labels},
                        jax.random.key(0)).compile()
  seconds = time.perf_counter() - start
  analysis = compiled.memory_analysis()
  mib = lambda n: n / 2**20
  arguments, temporaries = analysis.argument_size_in_bytes, analysis.temp_size_in_bytes
  outputs, aliased = analysis.output_size_in_bytes, analysis.alias_size_in_bytes
  peak = arguments + outputs - aliased + temporaries  # the donated state is aliased
  return {'arguments': mib(arguments), 'temporaries': mib(temporaries),
          'peak': mib(peak)}, seconds


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--model', default='resnet50')
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--size', type=int, default=224)
  args = parser.parse_args()
  model = zoo.create_model(args.model, num_classes=1000)
  rows = [(label, *compiled_memory(m, args.batch, args.size))
          for label, m in (('stored', model), ('remat=True', model.clone(remat=True)))]
  print(f'{args.model} {args.size}x{args.size} batch {args.batch}, float32 train step (SGD); '
        f'XLA memory analysis on {jax.devices()[0].device_kind}, MiB')
  print(f'  {"activations":<12} {"arguments":>10} {"temporaries":>12} {"peak":>8} '
        f'{"compile s":>10}')
  for label, memory, seconds in rows:
    print(f'  {label:<12} {memory["arguments"]:10.0f} {memory["temporaries"]:12.0f} '
          f'{memory["peak"]:8.0f} {seconds:10.1f}')
  change = rows[1][1]['peak'] / rows[0][1]['peak'] - 1
  print(f'  peak with remat: {change:+.0%}')


if __name__ == '__main__':
  main()
