"""Pet vs background on Oxford-IIIT Pet (TFDS `oxford_iiit_pet`, 3,680 train / 3,669 test).

    python -m train.segment --config configs/pets_segment.py --workdir runs/pets_unet
    python -m train.segment --config configs/pets_segment.py:fcn --workdir runs/pets_fcn

Needs the dataset prepared (it downloads about 800 MB: `tfds build oxford_iiit_pet`, then
`--config.data.data_dir=DIR` if it is not in the TFDS default folder). The trimaps' values are
1 pet, 2 background, 3 border; the border is ignored (`data.label_map`). Images and masks are
resized to 128x128 (masks by nearest neighbour), so IoU is measured at that size. `:fcn` uses
the FCN head on resnet18 instead of the U-Net; `:tiny` is a 4-step run for tests. Not measured
here: no network on the machines this was written on.
"""

import ml_collections

from configs import common, segment_base


def get_config(variant: str = '') -> ml_collections.ConfigDict:
  parts = common.parse_variant('configs/pets_segment.py', variant, ('fcn', 'tiny'))
  config = common.run_fields(ml_collections.ConfigDict(), early_stopping_metric='mean_iou',
                             early_stopping_mode='max')
  if 'fcn' in parts:
    config.model = 'fcn_resnet18'
    config.model_kwargs = ml_collections.ConfigDict(dict(decoder='resize', features=64))
  else:
    config.model = 'unet'
    config.model_kwargs = ml_collections.ConfigDict(dict(width=32, depth=4, decoder='resize'))
  config.data = segment_base.data(
      dataset='oxford_iiit_pet', image_size=(128, 128), class_names=('background', 'pet'),
      label_map=(255, 1, 0, 255),  # raw 1 pet, 2 background, 3 border (ignored)
      mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),  # ImageNet's
      augment=dict(flip=True, scale=(0.75, 1.33)))
  config.class_weights = ()  # () weighs every class alike; else one weight per class
  config.batch_size = 64
  config.eval_batch_size = 128
  config.num_epochs = 30.0
  config.optim = common.optim(name='adamw', learning_rate=1e-3, weight_decay=1e-4)
  config.log_every_steps = 50
  config.eval_every_epochs = 5.0
  config.checkpoint_every_epochs = 5.0
  config.num_shown = 8
  if 'tiny' in parts:
    common.tiny(config)
    config.data.image_size = (32, 32)
    config.batch_size, config.eval_batch_size = 8, 16
    config.eval_every_epochs = config.checkpoint_every_epochs = 2 / 4  # 32 mock examples
    config.model_kwargs = ml_collections.ConfigDict(dict(width=4, depth=2, decoder='resize'))
    config.num_shown = 2
  return config
