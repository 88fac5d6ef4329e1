"""bfloat16 ResNet-50 training throughput and model FLOPs utilization: zoo beside PyTorch AMP.

    python benchmarks/gpu_resnet50.py                          # on a GPU: batch 256
    python benchmarks/gpu_resnet50.py --batch 2 --steps 2      # smoke test, any machine

zoo: `resnet50` with bfloat16 computation (float32 parameters, BatchNorm statistics and logits),
one `jax.jit` train step with the state donated. PyTorch: torchvision's resnet50, channels_last,
under `torch.autocast(bfloat16)` (float32 parameters), on the same device. Both: SGD with
momentum 0.9, mean softmax cross-entropy, train mode, one fixed random batch on the device.

FLOPs per step come from each framework's own count of the compiled step: the compiled program's
cost analysis for zoo, `torch.utils.flop_counter.FlopCounterMode` for PyTorch (multiply-adds
count 2). MFU = FLOPs per step x steps per second / the device's peak bfloat16 dense FLOP/s,
looked up by device kind below, or given with `--peak_tflops`.
"""

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LEARNING_RATE, MOMENTUM, NUM_CLASSES, SIZE = 0.1, 0.9, 1000, 224

# Dense bfloat16 peak, TFLOP/s, by a substring of the device kind (first match wins).
PEAK_TFLOPS = (
    ('B200', 2250.0), ('H200', 989.4), ('H100 PCIe', 756.0), ('H100', 989.4),
    ('A100', 312.0), ('L40S', 362.1), ('L4', 121.0), ('A10G', 70.0), ('A10', 125.0),
    ('RTX 4090', 165.2), ('TPU v6 lite', 918.0), ('TPU v5 lite', 197.0), ('TPU v5p', 459.0),
    ('TPU v5', 459.0), ('TPU v4', 275.0),
)


def peak_tflops(device_kind: str, override: float) -> float | None:
  if override:
    return override
  return next((peak for key, peak in PEAK_TFLOPS if key in device_kind), None)


def time_steps(run, steps: int) -> float:
  """Seconds per step of `run(n)` (which returns once the n steps are done), after one warm-up."""
  run(1)
  start = time.perf_counter()
  run(steps)
  return (time.perf_counter() - start) / steps


def bench_zoo(batch: int, steps: int) -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax

  import zoo

  model = zoo.create_model('resnet50', num_classes=NUM_CLASSES, dtype=jnp.bfloat16)
  variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, SIZE, SIZE, 3)), train=False))(
      jax.random.key(0))
  tx = optax.sgd(LEARNING_RATE, momentum=MOMENTUM)
  state = (variables['params'], variables['batch_stats'], tx.init(variables['params']))
  rng = np.random.default_rng(0)
  images = jax.device_put(rng.standard_normal((batch, SIZE, SIZE, 3), np.float32))
  labels = jax.device_put(rng.integers(0, NUM_CLASSES, batch).astype(np.int32))

  def step(state, images, labels):
    params, batch_stats, opt_state = state

    def loss_fn(params):
      logits, updates = model.apply({'params': params, 'batch_stats': batch_stats}, images,
                                    train=True, mutable=['batch_stats'])
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
      return loss, updates['batch_stats']

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), batch_stats, opt_state), loss

  start = time.perf_counter()
  compiled = jax.jit(step, donate_argnums=0).lower(state, images, labels).compile()
  compile_s = time.perf_counter() - start
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost  # older JAX: one per program
  holder = [state]

  def run(n):
    state, loss = holder[0], None
    for _ in range(n):
      state, loss = compiled(state, images, labels)
    holder[0] = state
    jax.block_until_ready((state, loss))

  device = jax.devices()[0]
  return {'peer': 'zoo (JAX, bf16)', 'device': f'{device.platform}: {device.device_kind}',
          'device_kind': device.device_kind, 'seconds': time_steps(run, steps),
          'flops': cost.get('flops'), 'compile_s': compile_s}


def bench_torch(batch: int, steps: int) -> dict:
  import torch
  import torchvision
  from torch.utils.flop_counter import FlopCounterMode

  device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
  model = torchvision.models.resnet50(weights=None, num_classes=NUM_CLASSES).train()
  model = model.to(device, memory_format=torch.channels_last)
  optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)
  generator = torch.Generator().manual_seed(0)
  images = torch.randn(batch, 3, SIZE, SIZE, generator=generator).to(
      device, memory_format=torch.channels_last)
  labels = torch.randint(0, NUM_CLASSES, (batch,), generator=generator).to(device)

  def one_step():
    optimizer.zero_grad(set_to_none=True)
    with torch.autocast(device.type, dtype=torch.bfloat16):
      loss = torch.nn.functional.cross_entropy(model(images), labels)
    loss.backward()
    optimizer.step()

  def run(n):
    for _ in range(n):
      one_step()
    if device.type == 'cuda':
      torch.cuda.synchronize()

  counter = FlopCounterMode(display=False)
  with counter:
    one_step()
  kind = torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'
  return {'peer': 'PyTorch AMP bf16, channels_last', 'device': f'{device.type}: {kind}',
          'device_kind': kind, 'seconds': time_steps(run, steps),
          'flops': counter.get_total_flops(), 'compile_s': None}


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--batch', type=int, default=256)
  parser.add_argument('--steps', type=int, default=20, help='timed steps, after one warm-up')
  parser.add_argument('--peers', default='zoo,torch', help='comma-separated: zoo, torch')
  parser.add_argument('--peak_tflops', type=float, default=0.0,
                      help='peak bfloat16 TFLOP/s of the device (default: from the table)')
  args = parser.parse_args()
  sys.path.insert(0, ROOT)
  benches = {'zoo': bench_zoo, 'torch': bench_torch}
  unknown = set(args.peers.split(',')) - set(benches)
  if unknown:
    sys.exit(f'--peers: unknown {sorted(unknown)}; use any of {sorted(benches)}')
  print(f'ResNet-50 {SIZE}x{SIZE}, batch {args.batch}, bfloat16 compute, SGD momentum, '
        f'{args.steps} timed steps')
  print(f'{"peer":<34} {"img/s":>9} {"TFLOP/step":>11} {"TFLOP/s":>8} {"MFU":>6}  device')
  for name in args.peers.split(','):
    r = benches[name](args.batch, args.steps)
    peak = peak_tflops(r['device_kind'], args.peak_tflops)
    tflops = r['flops'] / r['seconds'] / 1e12 if r['flops'] else None
    mfu = (f'{tflops / peak:6.1%}' if tflops and peak
           else f'{"n/a":>6}')  # no known peak: pass --peak_tflops
    achieved = f'{tflops:8.2f}' if tflops else f'{"?":>8}'
    per_step = f'{r["flops"] / 1e12:11.3f}' if r['flops'] else f'{"?":>11}'
    print(f'{r["peer"]:<34} {args.batch / r["seconds"]:9.1f} {per_step} {achieved} {mfu}  '
          f'{r["device"]}' + (f' (compile {r["compile_s"]:.1f} s)' if r['compile_s'] else ''),
          flush=True)


if __name__ == '__main__':
  main()
