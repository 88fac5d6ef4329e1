"""ResNet-50 (v1.5) on ImageNet (ILSVRC-2012), 90 epochs, for a GPU node or a TPU pod slice.

    python -m train.classify --config configs/imagenet_resnet50.py --workdir gs://bucket/resnet50

ImageNet must be prepared by hand first (TFDS cannot download it): put the ILSVRC-2012 tar files
in DATA_DIR/downloads/manual and run `tfds build imagenet2012 --data_dir DATA_DIR`, then add
`--config.data.data_dir=DATA_DIR`.
The recipe of Goyal et al. 2017: SGD with Nesterov momentum, learning rate 0.1 per 256 images
(batch 1024: 0.4) warmed up over 5 epochs then cosine, weight decay 1e-4 on kernels only, label
smoothing 0.1, bfloat16 computation. Augmentation here is flips plus zoom and shift, not the
Inception random-resized crops of the paper.
Expected: about 76 % top-1 (the figure such recipes report; not measured here). On a pod with
more than 8 hosts set --config.data.shards to a multiple of the number of hosts.
"""

from configs import classify_base, common


def get_config(variant: str = ''):
  """`:tiny`: ResNet-50 of widths 4 to 32 (x4 at block outputs), 32x32 images, 4 steps (tests)."""
  tiny = common.parse_variant('configs/imagenet_resnet50.py', variant, ('tiny',))
  config = classify_base.get_config()
  config.model = 'resnet50'
  config.model_kwargs.zero_init_residual = True
  config.dtype = 'bfloat16'
  config.data.dataset = 'imagenet2012'
  config.data.eval_split = 'validation'
  config.data.image_size = (224, 224)
  config.data.normalization = 'per_channel'
  config.data.mean = (0.485, 0.456, 0.406)
  config.data.std = (0.229, 0.224, 0.225)
  config.data.augment.flip = True
  config.data.augment.zoom = 0.2
  config.data.augment.shift = 0.1
  config.batch_size = 1024
  config.eval_batch_size = 1024
  config.num_epochs = 90.0
  config.label_smoothing = 0.1
  config.optim.name = 'sgd'
  config.optim.nesterov = True
  config.optim.learning_rate = 0.4
  config.optim.weight_decay = 1e-4
  config.optim.schedule = 'cosine'
  config.optim.warmup_epochs = 5.0
  config.eval_every_epochs = 1.0
  config.checkpoint_every_epochs = 1.0
  config.log_every_steps = 100
  if tiny:
    common.tiny(config)
    config.data.image_size = (32, 32)
    config.model_kwargs.widths = (4, 8, 16, 32)
  return config
