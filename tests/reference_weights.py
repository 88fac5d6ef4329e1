"""What every weight test (tests/test_weights*.py) does with a reference model: seeded random
weights, a file in the source's own format, `zoo.load_pretrained`, and the logit comparison.

Random weights: every tensor of the reference is drawn, including those initialized to zero or
one (biases, tokens, position embeddings, layer scales) and BatchNorm's running statistics, so a
misplaced tensor changes the logits. torch, timm, safetensors and keras are imported inside the
functions, as the tests that use them have them.
"""

import functools
import math
import os

import jax
import numpy as np

import zoo

# BatchNorm's variables: (low, high) of a uniform draw; torch names, then Keras names.
BATCH_NORM_RANGES = {'weight': (0.5, 1.5), 'bias': (-0.5, 0.5), 'running_mean': (-0.5, 0.5),
                     'running_var': (0.5, 2.0),
                     'gamma': (0.5, 1.5), 'beta': (-0.5, 0.5), 'moving_mean': (-0.5, 0.5),
                     'moving_variance': (0.5, 2.0)}


def random_tensor(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int) -> np.ndarray:
  """Matrices and kernels N(0, 2 / fan_in) (He: activations keep their scale through ReLUs);
  vectors (biases, norms' scales, tokens) N(0, 0.25)."""
  if len(shape) >= 2:
    return rng.normal(0, math.sqrt(2 / fan_in), shape).astype(np.float32)
  return rng.normal(0, 0.5, shape).astype(np.float32)


def randomize_torch(model, seed: int = 0):
  """`model` with every tensor of its state dict random (seeded), in eval mode."""
  import torch  # pylint: disable=import-outside-toplevel

  rng = np.random.default_rng(seed)
  batch_norms = {name for name, module in model.named_modules()
                 if isinstance(module, torch.nn.modules.batchnorm._BatchNorm)}
  with torch.no_grad():
    for key, tensor in model.state_dict().items():
      module, _, leaf = key.rpartition('.')
      if leaf == 'num_batches_tracked':
        continue
      if module in batch_norms:
        value = rng.uniform(*BATCH_NORM_RANGES[leaf], tuple(tensor.shape))
      else:  # torch (out, in, kh, kw): the fan-in is everything after the first axis
        value = random_tensor(rng, tuple(tensor.shape), math.prod(tensor.shape[1:]))
      tensor.copy_(torch.from_numpy(np.asarray(value, np.float32)))
  return model.eval()


def randomize_keras(model, seed: int = 0):
  """`model` with every weight random (seeded) but its input normalization's statistics."""
  import keras  # pylint: disable=import-outside-toplevel

  rng = np.random.default_rng(seed)
  for layer in _leaf_layers(model):
    if isinstance(layer, keras.layers.Normalization):
      continue
    batch_norm = isinstance(layer, keras.layers.BatchNormalization)
    for weight in layer.weights:
      leaf, shape = weight.path.split('/')[-1], tuple(weight.shape)
      if batch_norm:
        value = rng.uniform(*BATCH_NORM_RANGES[leaf], shape)
      elif isinstance(layer, keras.layers.DepthwiseConv2D) and len(shape) == 4:
        value = random_tensor(rng, shape, shape[0] * shape[1])
      else:  # Keras (kh, kw, in, out) or (in, out): the fan-in is everything but the last axis
        value = random_tensor(rng, shape, math.prod(shape[:-1]))
      weight.assign(np.asarray(value, np.float32))
  return model


def _leaf_layers(layer):
  """The layers that hold weights, however deeply nested (in Sequential blocks)."""
  if getattr(layer, 'layers', None):
    for sub in layer.layers:
      yield from _leaf_layers(sub)
  else:
    yield layer


def images(size: int, seed: int = 0, batch: int = 2) -> np.ndarray:
  """A random NHWC batch, float32."""
  return np.random.default_rng(seed).normal(size=(batch, size, size, 3)).astype(np.float32)


def save_torch(model, path: os.PathLike) -> os.PathLike:
  """`model`'s state dict as `path`: torch.save for .pth, safetensors for .safetensors."""
  if str(path).endswith('.safetensors'):
    from safetensors.torch import save_file  # pylint: disable=import-outside-toplevel

    save_file(model.state_dict(), str(path))
  else:
    import torch  # pylint: disable=import-outside-toplevel

    torch.save(model.state_dict(), path)
  return path


def torch_logits(model, x: np.ndarray) -> np.ndarray:
  """The torch model's eval-mode output on NHWC `x`."""
  import torch  # pylint: disable=import-outside-toplevel

  with torch.no_grad():
    return model(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()


def keras_logits(model, x: np.ndarray) -> np.ndarray:
  """The Keras model's inference output (compiled: an eager call costs seconds more)."""
  return np.asarray(model.predict_on_batch(x))


def zoo_logits(model, variables, x: np.ndarray) -> np.ndarray:
  return np.asarray(_eval_apply(model)(variables, x))


@functools.cache
def _eval_apply(model):
  # One compilation per distinct model configuration.
  return jax.jit(functools.partial(model.apply, train=False))


def assert_logits_match(got: np.ndarray, want: np.ndarray, label: str) -> None:
  """max |got - want| <= 1e-4 * max(1, max |want|), float32; prints both figures."""
  got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
  assert got.shape == want.shape, (label, got.shape, want.shape)
  assert want.std() > 0.1, f'{label}: the reference logits are degenerate'
  diff, largest = float(np.abs(got - want).max()), float(np.abs(want).max())
  print(f'\n{label}: max|diff| {diff:.2e}, max|logit| {largest:.3g}')
  assert diff <= 1e-4 * max(1.0, largest), f'{label}: max|diff| {diff:.3g}, max|logit| {largest}'


def check_file(name: str, path: os.PathLike, x: np.ndarray, want: np.ndarray, label: str,
               **load_kwargs):
  """Loads `path` with `zoo.load_pretrained(name, ...)`, runs it on `x` and compares with the
  reference's logits `want`; returns (model, variables, pretrained config)."""
  model, variables, config = zoo.load_pretrained(name, path, with_config=True, **load_kwargs)
  assert_logits_match(zoo_logits(model, variables, x), want, label)
  return model, variables, config
