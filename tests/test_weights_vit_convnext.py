"""ViT and ConvNeXt weights from torchvision, timm and Keras match their reference models.

Each test builds the reference with seeded random weights (every tensor random, the zero- or
1e-6-initialized ones too, so that a misplaced tensor shows), saves it in its source's file format
(torchvision .pth, timm .safetensors, Keras .weights.h5), loads it with `zoo.load_pretrained`
and compares the logits on one random batch in eval mode (tests/reference_weights.py). The
reference models are narrow, with few blocks, on small images, to stay cheap: the mapping does
not depend on the sizes.
"""

import jax
import numpy as np
import pytest
from reference_weights import (
  check_file,
  images,
  keras_logits,
  randomize_keras,
  randomize_torch,
  save_torch,
  torch_logits,
)

import zoo
from zoo.weights import convnext as convnext_weights
from zoo.weights.mapping import ConversionError, map_variables, torch_layout

# ImageNet mean and std, as torchvision, timm and Keras' ConvNeXt normalize inputs.
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def check_torch(tmp_path, name, reference, size, source, **fields):
  """`reference` saved as its source's file, loaded onto zoo's `name` with `fields`, compared."""
  x = images(size, seed=1)
  suffix = '.pth' if source == 'torchvision' else '.safetensors'
  path = save_torch(reference, tmp_path / f'{name}{suffix}')
  check_file(name, path, x, torch_logits(reference, x), f'{name} {source}', **fields)


# ViT: torchvision's vit_b_16 and timm's vit_*_patch16_224 with their number of heads, 16
# channels per head (64 in the models), 2 blocks, on 48×48 images (a 3×3 grid of patches).
HEADS = {'vit_b_16': 12, 'vit_tiny_patch16_224': 3, 'vit_small_patch16_224': 6,
         'vit_base_patch16_224': 12}


def test_vit_b_16_from_torchvision(tmp_path):
  from torchvision.models.vision_transformer import VisionTransformer
  heads = HEADS['vit_b_16']
  ref = randomize_torch(VisionTransformer(image_size=48, patch_size=16, num_layers=2,
                                          num_heads=heads, hidden_dim=16 * heads,
                                          mlp_dim=64 * heads, num_classes=10))
  check_torch(tmp_path, 'vit_b_16', ref, 48, 'torchvision', depth=2, width=16 * heads)


@pytest.mark.parametrize('name', [n for n in HEADS if n.endswith('_224')])
def test_vit_from_timm(tmp_path, name):
  import timm
  width = 16 * HEADS[name]
  ref = randomize_torch(timm.create_model(name, img_size=48, depth=2, embed_dim=width,
                                          num_classes=10))
  check_torch(tmp_path, name, ref, 48, 'timm', depth=2, width=width)


def test_vit_avg_pool_without_class_token_from_timm(tmp_path):
  import timm
  ref = randomize_torch(timm.create_model('vit_tiny_patch16_224', img_size=32, depth=1,
                                          embed_dim=48, num_classes=10, class_token=False,
                                          global_pool='avg'))
  check_torch(tmp_path, 'vit_tiny_patch16_224', ref, 32, 'timm', depth=1, width=48)
  model, _, config = zoo.load_pretrained('vit_tiny_patch16_224', tmp_path / 'vit_tiny_patch16_224'
                                         '.safetensors', depth=1, width=48, with_config=True)
  assert (model.class_token, model.global_pool, model.image_size) == (False, 'avg', 32)
  assert config.input_size == (32, 32, 3)  # the weights' image size, for their preprocessing


# ConvNeXt: narrow stages of (1, 1, 2, 1) blocks on 32×32 images. The sizes share one mapping,
# their widths and depths aside.
CONVNEXT = dict(stage_sizes=(1, 1, 2, 1), widths=(8, 16, 24, 32))


def test_convnext_tiny_from_torchvision(tmp_path):
  from torchvision.models.convnext import CNBlockConfig, ConvNeXt
  widths, depths = CONVNEXT['widths'], CONVNEXT['stage_sizes']
  ref = randomize_torch(ConvNeXt([CNBlockConfig(w, n, d) for w, n, d in
                                  zip(widths, (*widths[1:], None), depths)], num_classes=10))
  check_torch(tmp_path, 'convnext_tiny', ref, 32, 'torchvision', **CONVNEXT)


def test_convnext_tiny_from_timm(tmp_path):
  import timm
  ref = randomize_torch(timm.create_model('convnext_tiny', depths=CONVNEXT['stage_sizes'],
                                          dims=CONVNEXT['widths'], num_classes=10))
  check_torch(tmp_path, 'convnext_tiny', ref, 32, 'timm', **CONVNEXT)


def test_convnext_tiny_from_keras(tmp_path):
  from keras.src.applications.convnext import ConvNeXt
  # ConvNeXtTiny's layers and its input normalization, narrower, with 10 classes.
  ref = ConvNeXt(depths=list(CONVNEXT['stage_sizes']), projection_dims=list(CONVNEXT['widths']),
                 name='convnext_tiny', input_shape=(32, 32, 3), classes=10,
                 classifier_activation=None, weights=None)
  randomize_keras(ref)
  pixels = np.random.default_rng(1).uniform(0, 255, size=(2, 32, 32, 3)).astype(np.float32)
  # zoo's model takes the torchvision normalization of the same pixels.
  x = ((pixels / 255 - MEAN) / STD).astype(np.float32)
  ref.save_weights(tmp_path / 'convnext_tiny.weights.h5')
  check_file('convnext_tiny', tmp_path / 'convnext_tiny.weights.h5', x,
             keras_logits(ref, pixels), 'convnext_tiny keras', **CONVNEXT)


def test_convnext_tiny_from_keras_without_top(tmp_path):
  from keras.src.applications.convnext import ConvNeXt
  ref = ConvNeXt(depths=list(CONVNEXT['stage_sizes']), projection_dims=list(CONVNEXT['widths']),
                 name='convnext_tiny', input_shape=(32, 32, 3), include_top=False, pooling='avg',
                 weights=None)
  randomize_keras(ref)
  pixels = np.random.default_rng(1).uniform(0, 255, size=(2, 32, 32, 3)).astype(np.float32)
  x = ((pixels / 255 - MEAN) / STD).astype(np.float32)
  ref.save_weights(tmp_path / 'convnext_tiny_notop.weights.h5')
  model, _, _ = check_file('convnext_tiny', tmp_path / 'convnext_tiny_notop.weights.h5', x,
                           keras_logits(ref, pixels), 'convnext_tiny keras without top',
                           **CONVNEXT)
  assert model.num_classes == 0


def test_weights_of_another_size_name_the_tensor_and_both_shapes(tmp_path):
  import timm
  path = save_torch(timm.create_model('vit_small_patch16_224', img_size=32, depth=1),
                    tmp_path / 'vit_small.safetensors')
  with pytest.raises(ConversionError, match=r"timm weights: 'blocks.0.attn.proj.bias' has "
                                            r'shape \(384,\).*needs \(192,\)'):
    zoo.load_pretrained('vit_tiny_patch16_224', path, depth=1)


def test_a_model_part_the_weights_lack_is_named():
  model = zoo.create_model('vit_tiny_patch16_224', depth=1, image_size=32)
  target = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                          jax.ShapeDtypeStruct((1, 32, 32, 3), np.float32))
  with pytest.raises(ConversionError, match='timm weights have nothing for params/block1/'):
    map_variables(target, {}, convnext_weights.rule('convnext_tiny', 'timm'), source='timm',
                  layout=torch_layout)
