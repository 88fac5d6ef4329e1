"""Training-step throughput of zoo beside PyTorch and Keras 3 (JAX backend), on one machine.

    python benchmarks/peers.py                       # every model, the CPU defaults
    python benchmarks/peers.py --models resnet20 --rounds 5 --steps 10

Needs the `bench` extra (torch, torchvision, timm, keras). Every peer trains the same
architecture on the same random batch: float32, train mode (BatchNorm statistics updated), mean
softmax cross-entropy over integer labels, SGD with momentum 0.9, learning rate 0.01.

Peers, each in its own process (so a peak memory belongs to one peer and no framework's threads
run during another's turn):
  zoo          the zoo model, one `jax.jit` step with the state donated
  keras_jax    keras.applications (or the same architecture written in Keras) on the JAX backend,
               through Keras' own compiled step (`train_on_batch`, jit with donation)
  torch_eager  torchvision / timm (or the same architecture in PyTorch), NCHW
  torch_cl     the same, channels_last (model and input)
  torch_compile  the same as torch_eager, the model under `torch.compile` (inductor)

Each worker builds its model and runs a first step (the compile time below is that first step
less one steady step) and one more warm-up step. Then the rounds: in each round every peer runs
`--steps` steps in turn (the order rotates from round to round), timed from the first call to the
result being on the host (`block_until_ready` for JAX). img/s is the median over rounds, with the
range. Peak memory is the worker's peak resident memory above what it held after its imports.
A model missing from zoo's registry is skipped with a line saying so.
"""

import argparse
import json
import os
import queue
import resource
import statistics
import subprocess
import sys
import threading
import time
import traceback

PEERS = ('zoo', 'keras_jax', 'torch_eager', 'torch_cl', 'torch_compile')
# name: (image size, classes, CPU batch)
MODELS = {
    'resnet20': (32, 10, 128),
    'resnet50': (224, 1000, 16),
    'mobilenet_v2': (224, 1000, 32),
    'vit_small_patch16_224': (224, 1000, 16),
}
LEARNING_RATE, MOMENTUM = 0.01, 0.9
RESULT = '@@ '  # marks the worker's protocol lines among whatever the frameworks print
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------- peers' models

def torch_resnet20(num_classes: int):
  """CIFAR ResNet-20 (He et al. 2016), option A shortcuts, as zoo's resnet20."""
  import torch
  import torch.nn.functional as F
  from torch import nn

  class Block(nn.Module):
    def __init__(self, cin, cout, stride):
      super().__init__()
      self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
      self.bn1 = nn.BatchNorm2d(cout)
      self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
      self.bn2 = nn.BatchNorm2d(cout)
      self.stride, self.pad = stride, cout - cin

    def forward(self, x):
      y = F.relu(self.bn1(self.conv1(x)))
      y = self.bn2(self.conv2(y))
      if self.stride > 1 or self.pad:
        x = F.pad(x[:, :, ::self.stride, ::self.stride], (0, 0, 0, 0, 0, self.pad))
      return F.relu(x + y)

  layers = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()]
  cin = 16
  for i, width in enumerate((16, 32, 64)):
    for j in range(3):
      layers.append(Block(cin, width, 2 if i and not j else 1))
      cin = width
  layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, num_classes)]
  return torch.nn.Sequential(*layers)


def torch_model(name: str, num_classes: int):
  if name == 'resnet20':
    return torch_resnet20(num_classes)
  if name == 'vit_small_patch16_224':
    import timm
    return timm.create_model(name, pretrained=False, num_classes=num_classes)
  import torchvision
  return getattr(torchvision.models, name)(weights=None, num_classes=num_classes)


def keras_resnet20(num_classes: int):
  import keras
  from keras import layers

  def conv_bn(x, width, stride, relu=True):
    if stride > 1:  # PyTorch's symmetric padding, as zoo and the torch peer
      x = layers.ZeroPadding2D(1)(x)
    x = layers.Conv2D(width, 3, stride, 'valid' if stride > 1 else 'same', use_bias=False)(x)
    x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(x)
    return layers.ReLU()(x) if relu else x

  inputs = keras.Input((32, 32, 3))
  x = conv_bn(inputs, 16, 1)
  for i, width in enumerate((16, 32, 64)):
    for j in range(3):
      stride = 2 if i and not j else 1
      y = conv_bn(conv_bn(x, width, stride), width, 1, relu=False)
      if stride > 1:
        x = layers.Lambda(lambda t, w=width: keras.ops.pad(
            t[:, ::2, ::2, :], [(0, 0), (0, 0), (0, 0), (0, w - t.shape[-1])]))(x)
      x = layers.ReLU()(layers.Add()([x, y]))
  x = layers.GlobalAveragePooling2D()(x)
  return keras.Model(inputs, layers.Dense(num_classes)(x))


def keras_vit_small(num_classes: int, size: int = 224, patch: int = 16, dim: int = 384,
                    depth: int = 12, heads: int = 6):
  """ViT-S/16 as timm's vit_small_patch16_224: class token, pre-norm blocks, MLP ratio 4."""
  import keras
  from keras import layers

  class ClassTokenAndPosition(layers.Layer):
    def build(self, input_shape):
      self.cls = self.add_weight((1, 1, dim), initializer='zeros', name='cls')
      self.pos = self.add_weight((1, input_shape[1] + 1, dim), initializer='random_normal',
                                 name='pos')

    def call(self, x):
      cls = keras.ops.broadcast_to(self.cls, (keras.ops.shape(x)[0], 1, dim))
      return keras.ops.concatenate([cls, x], axis=1) + self.pos

  inputs = keras.Input((size, size, 3))
  x = layers.Conv2D(dim, patch, patch)(inputs)
  x = ClassTokenAndPosition()(layers.Reshape(((size // patch) ** 2, dim))(x))
  for _ in range(depth):
    y = layers.LayerNormalization(epsilon=1e-6)(x)
    x = x + layers.MultiHeadAttention(heads, dim // heads)(y, y)
    y = layers.LayerNormalization(epsilon=1e-6)(x)
    y = layers.Dense(dim)(layers.Activation('gelu')(layers.Dense(4 * dim)(y)))
    x = x + y
  x = layers.LayerNormalization(epsilon=1e-6)(x)[:, 0]
  return keras.Model(inputs, layers.Dense(num_classes)(x))


def keras_model(name: str, size: int, num_classes: int):
  import keras
  if name == 'resnet20':
    return keras_resnet20(num_classes)
  if name == 'vit_small_patch16_224':
    return keras_vit_small(num_classes, size)
  build = {'resnet50': keras.applications.ResNet50,
           'mobilenet_v2': keras.applications.MobileNetV2}[name]
  return build(weights=None, input_shape=(size, size, 3), classes=num_classes,
               classifier_activation=None)


# ----------------------------------------------------------------------------- the steps

def zoo_step(name: str, size: int, num_classes: int, images, labels):
  """A jitted zoo train step with the state donated; returns `run(n)` that blocks on the result."""
  import jax
  import jax.numpy as jnp
  import optax

  import zoo

  model = zoo.create_model(name, num_classes=num_classes)
  variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, size, size, 3)), train=False))(
      jax.random.key(0))
  tx = optax.sgd(LEARNING_RATE, momentum=MOMENTUM)
  state = (variables['params'], variables.get('batch_stats', {}),
           tx.init(variables['params']))
  images, labels = jax.device_put(images), jax.device_put(labels)

  def step(state, images, labels, rng):
    params, batch_stats, opt_state = state

    def loss_fn(params):
      logits, updates = model.apply(
          {'params': params, 'batch_stats': batch_stats}, images, train=True,
          mutable=['batch_stats'], rngs={'dropout': rng})
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
      return loss, updates.get('batch_stats', {})

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), batch_stats, opt_state), loss

  step = jax.jit(step, donate_argnums=0)
  holder = [state]

  def run(n):
    state, loss = holder[0], None
    for i in range(n):
      state, loss = step(state, images, labels, jax.random.key(i))
    holder[0] = state
    jax.block_until_ready((state, loss))
  return run


def keras_step(name: str, size: int, num_classes: int, images, labels):
  import jax
  import keras
  model = keras_model(name, size, num_classes)
  model.compile(optimizer=keras.optimizers.SGD(LEARNING_RATE, momentum=MOMENTUM),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                jit_compile=True)
  images, labels = jax.device_put(images), jax.device_put(labels)

  def run(n):
    for _ in range(n):  # returns the loss on the host: each step ends synchronized
      model.train_on_batch(images, labels)
  return run


def torch_step(name: str, num_classes: int, images, labels, variant: str):
  import torch
  model = torch_model(name, num_classes).train()
  x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
  y = torch.from_numpy(labels.astype('int64'))
  if variant == 'torch_cl':
    model = model.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
  optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)
  forward = torch.compile(model) if variant == 'torch_compile' else model

  def run(n):
    for _ in range(n):
      optimizer.zero_grad(set_to_none=True)
      loss = torch.nn.functional.cross_entropy(forward(x), y)
      loss.backward()
      optimizer.step()
  return run


def make_step(peer: str, name: str, batch: int):
  import numpy as np
  size, num_classes, _ = MODELS[name]
  rng = np.random.default_rng(0)
  images = rng.standard_normal((batch, size, size, 3), np.float32)
  labels = rng.integers(0, num_classes, batch).astype(np.int32)
  if peer == 'zoo':
    return zoo_step(name, size, num_classes, images, labels)
  if peer == 'keras_jax':
    return keras_step(name, size, num_classes, images, labels)
  return torch_step(name, num_classes, images, labels, peer)


# ----------------------------------------------------------------------------- worker process

def _rss_mb() -> float:
  with open('/proc/self/statm') as f:
    return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20


def _reply(**fields) -> None:
  print(RESULT + json.dumps(fields), flush=True)


def worker(peer: str, name: str, batch: int) -> None:
  """Builds one peer's step, then answers 'run N' with the seconds N steps took; 'quit' ends."""
  if peer == 'keras_jax':
    os.environ['KERAS_BACKEND'] = 'jax'
  # The frameworks are imported before the memory baseline, so the peak is the model's and step's.
  if peer.startswith('torch'):
    import timm  # noqa: F401
    import torch  # noqa: F401
    import torchvision  # noqa: F401
  else:
    import jax  # noqa: F401
    import optax  # noqa: F401
    if peer == 'keras_jax':
      import keras  # noqa: F401
    else:
      import zoo  # noqa: F401
  baseline = _rss_mb()
  try:
    start = time.perf_counter()
    run = make_step(peer, name, batch)
    run(1)
    first = time.perf_counter() - start
    start = time.perf_counter()
    run(1)
    _reply(first=first, second=time.perf_counter() - start)
  except Exception as e:  # noqa: BLE001  (a peer that cannot run is a result: it goes in the table)
    traceback.print_exc()
    _reply(error=f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}'[:120])
    return
  for line in sys.stdin:
    command = line.split()
    if command[0] == 'run':
      start = time.perf_counter()
      run(int(command[1]))
      _reply(seconds=time.perf_counter() - start)
    else:
      peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
      _reply(peak_mb=peak - baseline)
      return


# ----------------------------------------------------------------------------- coordinator

class Worker:
  """One peer's process; `ask` sends a command and waits (at most `timeout` s) for the reply."""

  def __init__(self, peer: str, name: str, batch: int, log):
    self.peer = peer
    self.process = subprocess.Popen(
        [sys.executable, __file__, '--worker', peer, '--models', name, '--batch', str(batch)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True)
    self.replies = queue.Queue()
    threading.Thread(target=self._read, daemon=True).start()

  def _read(self):
    for line in self.process.stdout:
      if line.startswith(RESULT):
        self.replies.put(json.loads(line[len(RESULT):]))
    self.replies.put({'error': f'exited with status {self.process.wait()}'})

  def ask(self, command: str | None, timeout: float) -> dict:
    if command:
      self.process.stdin.write(command + '\n')
      self.process.stdin.flush()
    try:
      return self.replies.get(timeout=timeout)
    except queue.Empty:
      self.process.kill()
      return {'error': f'no answer in {timeout:.0f} s (killed)'}

  def close(self) -> dict:
    reply = self.ask('quit', 60) if self.process.poll() is None else {}
    self.process.wait()
    return reply


def bench_model(name: str, peers: list[str], batch: int, rounds: int, steps: int,
                ready_timeout: float, log) -> list[dict]:
  workers, rows = [], {}
  for peer in peers:  # one at a time: a compile never competes with another peer
    w = Worker(peer, name, batch, log)
    reply = w.ask(None, ready_timeout)
    rows[peer] = dict(peer=peer, **reply)
    if 'error' in reply:
      w.close()
    else:
      workers.append(w)
  for r in range(rounds if workers else 0):
    shift = r % len(workers)
    for w in workers[shift:] + workers[:shift]:
      reply = w.ask(f'run {steps}', ready_timeout)
      if 'error' in reply:
        rows[w.peer]['error'] = reply['error']
      else:
        rows[w.peer].setdefault('rates', []).append(batch * steps / reply['seconds'])
      time.sleep(0.2)  # let the last peer's threads go idle
  for w in workers:
    rows[w.peer].update(w.close())
  return [rows[p] for p in peers]


def _cpu_name() -> str:
  with open('/proc/cpuinfo') as f:
    return next((line.split(':', 1)[1].strip() for line in f
                 if line.startswith('model name')), '?')


def format_table(name: str, batch: int, size: int, rows: list[dict]) -> str:
  zoo_rate = next((statistics.median(r['rates']) for r in rows
                   if r['peer'] == 'zoo' and r.get('rates')), None)
  header = (f'  {"peer":<14} {"img/s":>8} {"range":>13} {"compile s":>10} {"peak MB":>8} '
            f'{"vs zoo":>7}')
  lines = [f'{name} {size}x{size} batch {batch}', header]
  for r in rows:
    if not r.get('rates'):
      lines.append(f'  {r["peer"]:<14} failed: {r.get("error", "no result")}')
      continue
    rate = statistics.median(r['rates'])
    compile_s = r['first'] - batch / rate
    peak = f'{r["peak_mb"]:.0f}' if 'peak_mb' in r else '?'
    ratio = f'{rate / zoo_rate:.2f}x' if zoo_rate else '-'
    lines.append(f'  {r["peer"]:<14} {rate:8.1f} {min(r["rates"]):6.1f}-{max(r["rates"]):<6.1f} '
                 f'{compile_s:10.1f} {peak:>8} {ratio:>7}'
                 + (f'  ({r["error"]})' if 'error' in r else ''))
  return '\n'.join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--models', default=','.join(MODELS), help='comma-separated')
  parser.add_argument('--peers', default=','.join(PEERS), help='comma-separated')
  parser.add_argument('--batch', type=int, default=0, help='0: the CPU default of each model')
  parser.add_argument('--rounds', type=int, default=3)
  parser.add_argument('--steps', type=int, default=3, help='steps per peer per round')
  parser.add_argument('--ready_timeout', type=float, default=900,
                      help='seconds a peer may take to build and compile before it is reported '
                           'as too slow')
  parser.add_argument('--log', default=os.devnull, help='file for the workers\' own output')
  parser.add_argument('--worker', help=argparse.SUPPRESS)
  args = parser.parse_args()
  sys.path.insert(0, ROOT)
  if args.worker:
    return worker(args.worker, args.models, args.batch)

  models, peers = args.models.split(','), args.peers.split(',')
  unknown = [m for m in models if m not in MODELS] + [p for p in peers if p not in PEERS]
  if unknown:
    sys.exit(f'unknown model or peer {unknown}: models are {list(MODELS)}, peers {list(PEERS)}')
  import zoo
  print(f'{_cpu_name()}, {os.cpu_count()} CPUs; '
        f'{args.rounds} rounds x {args.steps} steps per peer; float32, SGD momentum, train mode',
        flush=True)
  with open(args.log, 'a') as log:
    for name in models:
      if name not in zoo.list_models():
        print(f'{name}: skipped, not in the zoo registry yet', flush=True)
        continue
      size, _, default_batch = MODELS[name]
      batch = args.batch or default_batch
      rows = bench_model(name, peers, batch, args.rounds, args.steps, args.ready_timeout, log)
      print(format_table(name, batch, size, rows), flush=True)


if __name__ == '__main__':
  main()
