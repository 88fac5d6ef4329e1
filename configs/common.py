"""Defaults every recipe shares: the data, optimizer and run fields, with their meanings.

Imports nothing but ml_collections, so reading a config never starts TensorFlow or JAX. The
trainer lays a recipe's `data` over `data()` (train/data/pipeline.py) and reads the rest as is.
Durations and intervals are in epochs of the training split (or `num_steps`); batch sizes are
global (over all devices and processes).
"""

import ml_collections

# Training-time augmentation (train/data/augment.py); all off by default.
AUGMENT = dict(flip=False, crop_padding=0, rotation=0.0, shift=0.0, zoom=0.0, shear=0.0,
               noise_std=0.0, custom='', fill_mode='nearest')


def data(**overrides) -> ml_collections.ConfigDict:
  """The `config.data` fields and their defaults."""
  config = ml_collections.ConfigDict(dict(
      dataset='sklearn_digits',  # A TFDS name, or 'folder:/path/to/images'.
      data_dir='',  # TFDS data_dir; '' means the TFDS default.
      train_split='train',
      eval_split='test',
      # What evaluations during training (best checkpoint, early stopping, tuning) use; the
      # eval split is then evaluated once, at the end, with the best checkpoint. A fraction in
      # (0, 1) holds out a fixed, stratified share of the training split; a string names a split
      # (a TFDS split such as 'train[90%:]', or a folder's 'val/' subfolder). None: evaluate on
      # eval_split.
      validation_split=None,
      image_size=(16, 16),  # (height, width) to resize to; () keeps the dataset's own size.
      # How images are brought to image_size: 0 resizes the whole image to it; a fraction in
      # (0, 1] resizes the shorter side to image_size / crop_fraction, keeping the aspect ratio,
      # and keeps the centre image_size (the eval transform of torchvision and timm, 0.875).
      crop_fraction=0.0,
      interpolation='bilinear',  # of that resize: 'bilinear', 'bicubic', 'area', 'nearest', ...
      shuffle_buffer=10_000,
      # Training streams; 0: one per process. A fixed number makes the batches (and so the
      # results) the same whatever the number of processes that divides it.
      shards=8,
      # One of 'none', 'per_channel' (fixed mean/std below), 'featurewise' (from the training
      # images), 'samplewise' (each image's own).
      normalization='featurewise',
      mean=(),  # Per channel, on the [0, 1] scale, for 'per_channel'.
      std=(),
      bgr=False,  # Hand the model BGR channels (Keras' 'caffe' weights); mean and std stay RGB.
      augment=dict(AUGMENT),
      folder_test_fraction=0.2,  # For folders without train/ and test/ subfolders.
      classes=(),  # Labels to keep, e.g. (0, 1, ..., 8); () keeps every class.
  ))
  config.update(overrides)
  return config


def optim(**overrides) -> ml_collections.ConfigDict:
  """Every `config.optim` field (train/core/optim.py), with defaults; recipes override some."""
  config = ml_collections.ConfigDict(dict(
      name='adamw',  # 'sgd' (with momentum), 'adam' or 'adamw'
      learning_rate=1e-3, momentum=0.9, nesterov=False, b1=0.9, b2=0.999,
      weight_decay=1e-4,  # on kernels only (not biases or normalization scales)
      schedule='cosine',  # 'constant', 'cosine' (to zero) or 'step' (decay_factor at decay_epochs)
      warmup_epochs=0.0, decay_epochs=(), decay_factor=0.1,
      grad_clip_norm=0.0,  # 0: no clipping
      # True: the peak learning rate and the weight decay are arrays in the optimizer state
      # (optax.inject_hyperparams), not constants in the compiled step, so runs that differ only
      # in them (a search's trials) share one compiled program.
      inject_hyperparams=False))
  config.lock()  # a misspelt override fails here rather than being ignored
  config.update(overrides)
  return config


def run_fields(config: ml_collections.ConfigDict, *, early_stopping_metric: str,
               early_stopping_mode: str) -> ml_collections.ConfigDict:
  """Adds the fields `train.core.run` reads, with defaults, to `config`; returns it."""
  config.seed = 0
  config.dtype = 'float32'  # computation dtype ('bfloat16' for mixed precision); params float32
  config.batch_size = 128
  config.eval_batch_size = 256
  config.grad_accum_steps = 1  # micro-batches per step: the same update in less memory
  config.parallelism = 'jit'  # or 'pmap' (the same numbers)
  config.num_epochs = 10.0
  config.num_steps = 0  # > 0: train for this many steps instead of num_epochs
  config.log_every_steps = 50
  config.eval_every_epochs = 1.0
  config.checkpoint_every_epochs = 1.0
  config.keep_checkpoints = 3  # the latest ones, plus the best by the task's eval metric
  # JAX's persistent compilation cache (train/core/compilation_cache.py): a rerun or resume
  # skips compiling. Also off with the environment variable ZOO_COMPILATION_CACHE=0.
  config.compilation_cache = True
  # (first, last): write a jax.profiler trace of these steps to WORKDIR/profile; () for none.
  config.profile_steps = ()
  config.early_stopping = ml_collections.ConfigDict(dict(
      metric=early_stopping_metric, mode=early_stopping_mode, patience=0,  # 0: never stop
      min_delta=0.0))
  return config


def parse_variant(path: str, variant: str, known: tuple[str, ...]) -> set[str]:
  """The '+'-separated parts of a `file.py:variant` argument, each checked against `known`.

  An unknown part is a ValueError whose message is one line naming the file and the choices
  (the command line prints it as such, with exit status 2).
  """
  parts = set(filter(None, variant.split('+')))
  unknown = sorted(parts - set(known))
  if unknown:
    raise ValueError(f'{path}:{variant}: unknown variant {", ".join(unknown)}; use one of '
                     f'{", ".join(known)} (or several joined by +), or none')
  return parts


def tiny(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The run fields of a `:tiny` variant: a few steps of small batches, for tests."""
  config.batch_size = 32
  config.eval_batch_size = 120
  config.num_steps = 4
  config.eval_every_epochs = 2 / 44  # 2 steps on sklearn_digits (1437 // 32 = 44 per epoch)
  config.checkpoint_every_epochs = 2 / 44
  config.log_every_steps = 2
  config.keep_checkpoints = 2
  return config
