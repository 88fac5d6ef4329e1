"""ViT and ConvNeXt weights from torchvision, timm and Keras match their reference models.

Each test builds the reference with seeded random weights (every tensor random, the zero- or
1e-6-initialized ones too, so that a misplaced tensor shows), converts its weights through the
family's `overrides` and `rule` with `map_variables`, and compares the logits on one random
batch in eval mode. The reference models are narrow, with few blocks, on small images, to stay
cheap: the mapping does not depend on the sizes.
"""

import math

import jax
import numpy as np
import pytest

import zoo
from zoo.weights import convnext as convnext_weights
from zoo.weights import vit as vit_weights
from zoo.weights.mapping import ConversionError, keras_layout, map_variables, torch_layout

LAYOUTS = {'torchvision': torch_layout, 'timm': torch_layout, 'keras': keras_layout}
# ImageNet mean and std, as torchvision, timm and Keras' ConvNeXt normalize inputs.
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def random_tensor(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
  """Weights of a sensible scale: 1/sqrt(fan-in) for matrices and kernels, else 0.5."""
  if len(shape) in (2, 4):  # torch (out, in[, kh, kw])
    return rng.normal(size=shape) / math.sqrt(math.prod(shape[1:]))
  return 0.5 * rng.normal(size=shape)


def randomize_torch(model):
  """Every parameter of a torch model drawn at random (seeded), and eval mode."""
  import torch
  rng = np.random.default_rng(0)
  with torch.no_grad():
    for p in model.state_dict().values():
      p.copy_(torch.from_numpy(random_tensor(rng, tuple(p.shape))))
  return model.eval()


def torch_tensors(model) -> dict[str, np.ndarray]:
  return {k: v.numpy() for k, v in model.state_dict().items()}


def torch_logits(model, images: np.ndarray) -> np.ndarray:
  import torch
  with torch.no_grad():
    return model(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()


def keras_tensors(model) -> dict[str, np.ndarray]:
  """The weights of a Keras model as the file readers give them: '<layer name>/<weight name>',
  layers named by their own name however deeply nested (in Sequential blocks)."""
  def leaves(layer):
    if getattr(layer, 'layers', None):
      for sub in layer.layers:
        yield from leaves(sub)
    else:
      yield layer
  return {f'{layer.name}/{w.name}': np.asarray(w) for layer in leaves(model) for w in layer.weights}


def images(size: int) -> np.ndarray:
  return np.random.default_rng(1).normal(size=(2, size, size, 3)).astype(np.float32)


def zoo_logits(family, name: str, source: str, tensors, x: np.ndarray, **fields) -> np.ndarray:
  """Logits of zoo's `name` on `x`, built with the fields the weights need, and converted."""
  model = zoo.create_model(name, **(family.overrides(name, source, tensors) | fields))
  target = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), x)
  variables = map_variables(target, tensors, family.rule(name, source), source=source,
                            layout=LAYOUTS[source])
  return np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, x))


def assert_logits_match(expected: np.ndarray, got: np.ndarray) -> None:
  assert got.shape == expected.shape
  diff = float(np.max(np.abs(got - expected)))
  bound = 1e-4 * max(1.0, float(np.max(np.abs(expected))))
  print(f'max |diff| {diff:.2e}, max |logit| {np.max(np.abs(expected)):.2f}')
  assert diff <= bound, f'max |diff| {diff:.3g} > {bound:.3g}'


# ViT: torchvision's vit_b_16 and timm's vit_*_patch16_224 with their number of heads, 16
# channels per head (64 in the models), 2 blocks, on 48×48 images (a 3×3 grid of patches).
HEADS = {'vit_b_16': 12, 'vit_tiny_patch16_224': 3, 'vit_small_patch16_224': 6,
         'vit_base_patch16_224': 12}


def test_vit_b_16_from_torchvision():
  from torchvision.models.vision_transformer import VisionTransformer
  heads = HEADS['vit_b_16']
  ref = randomize_torch(VisionTransformer(image_size=48, patch_size=16, num_layers=2,
                                          num_heads=heads, hidden_dim=16 * heads,
                                          mlp_dim=64 * heads, num_classes=10))
  x = images(48)
  got = zoo_logits(vit_weights, 'vit_b_16', 'torchvision', torch_tensors(ref), x, depth=2,
                   width=16 * heads)
  assert_logits_match(torch_logits(ref, x), got)


@pytest.mark.parametrize('name', [n for n in HEADS if n.endswith('_224')])
def test_vit_from_timm(name):
  import timm
  width = 16 * HEADS[name]
  ref = randomize_torch(timm.create_model(name, img_size=48, depth=2, embed_dim=width,
                                          num_classes=10))
  x = images(48)
  got = zoo_logits(vit_weights, name, 'timm', torch_tensors(ref), x, depth=2, width=width)
  assert_logits_match(torch_logits(ref, x), got)


def test_vit_avg_pool_without_class_token_from_timm():
  import timm
  ref = randomize_torch(timm.create_model('vit_tiny_patch16_224', img_size=32, depth=1,
                                          embed_dim=48, num_classes=10, class_token=False,
                                          global_pool='avg'))
  tensors = torch_tensors(ref)
  fields = vit_weights.overrides('vit_tiny_patch16_224', 'timm', tensors)
  assert (fields['class_token'], fields['global_pool'], fields['image_size']) == (False, 'avg', 32)
  x = images(32)
  got = zoo_logits(vit_weights, 'vit_tiny_patch16_224', 'timm', tensors, x, depth=1,
                   width=48)
  assert_logits_match(torch_logits(ref, x), got)


# ConvNeXt: narrow stages of (1, 1, 2, 1) blocks on 32×32 images. The sizes share one mapping,
# their widths and depths aside.
CONVNEXT = dict(stage_sizes=(1, 1, 2, 1), widths=(8, 16, 24, 32))


def test_convnext_tiny_from_torchvision():
  from torchvision.models.convnext import CNBlockConfig, ConvNeXt
  widths, depths = CONVNEXT['widths'], CONVNEXT['stage_sizes']
  ref = randomize_torch(ConvNeXt([CNBlockConfig(w, n, d) for w, n, d in
                                  zip(widths, (*widths[1:], None), depths)], num_classes=10))
  x = images(32)
  got = zoo_logits(convnext_weights, 'convnext_tiny', 'torchvision', torch_tensors(ref), x,
                   **CONVNEXT)
  assert_logits_match(torch_logits(ref, x), got)


def test_convnext_tiny_from_timm():
  import timm
  ref = randomize_torch(timm.create_model('convnext_tiny', depths=CONVNEXT['stage_sizes'],
                                          dims=CONVNEXT['widths'], num_classes=10))
  x = images(32)
  got = zoo_logits(convnext_weights, 'convnext_tiny', 'timm', torch_tensors(ref), x, **CONVNEXT)
  assert_logits_match(torch_logits(ref, x), got)


def test_convnext_tiny_from_keras():
  from keras.src.applications.convnext import ConvNeXt
  # ConvNeXtTiny's layers and its input normalization, narrower, with 10 classes.
  ref = ConvNeXt(depths=list(CONVNEXT['stage_sizes']), projection_dims=list(CONVNEXT['widths']),
                 name='convnext_tiny', input_shape=(32, 32, 3), classes=10,
                 classifier_activation=None, weights=None)
  rng = np.random.default_rng(0)
  for w in ref.weights:  # drawn in torch's (out, in, ...) order, so fan-in is the same
    w.assign(random_tensor(rng, tuple(w.shape[::-1])).T.astype(np.float32))
  pixels = np.random.default_rng(1).uniform(0, 255, size=(2, 32, 32, 3)).astype(np.float32)
  expected = ref.predict_on_batch(pixels)  # compiled; an eager call costs seconds more
  # zoo's model takes the torchvision normalization of the same pixels.
  x = ((pixels / 255 - MEAN) / STD).astype(np.float32)
  got = zoo_logits(convnext_weights, 'convnext_tiny', 'keras', keras_tensors(ref), x,
                   **CONVNEXT)
  assert_logits_match(expected, got)


def test_weights_of_another_size_name_the_tensor_and_both_shapes():
  import timm
  tensors = torch_tensors(timm.create_model('vit_small_patch16_224', img_size=32, depth=1))
  with pytest.raises(ConversionError, match=r"timm weights: 'blocks.0.attn.proj.bias' has "
                                            r'shape \(384,\).*needs \(192,\)'):
    zoo_logits(vit_weights, 'vit_tiny_patch16_224', 'timm', tensors, images(32), depth=1)


def test_a_model_part_the_weights_lack_is_named():
  model = zoo.create_model('vit_tiny_patch16_224', depth=1, image_size=32)
  target = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                          jax.ShapeDtypeStruct((1, 32, 32, 3), np.float32))
  with pytest.raises(ConversionError, match='timm weights have nothing for params/block1/'):
    map_variables(target, {}, convnext_weights.rule('convnext_tiny', 'timm'), source='timm',
                  layout=torch_layout)
