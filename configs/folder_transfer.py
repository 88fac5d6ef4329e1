"""Transfer learning on a folder of your own images: a pretrained backbone frozen, then
fine-tuned (`config.transfer`, docs/transfer.md).

Offline, as measured here: a folder of photo crops made from scikit-learn's two photographs
(four classes: the top and bottom halves of each; train/ and test/ cut from disjoint parts), and
a torchvision ResNet-18 file with random weights, which stands in for an ImageNet download:

    python -m train.data.photo_folder runs/photo_folder
    python -c "import torch, torchvision; torch.manual_seed(0); \\
        torch.save(torchvision.models.resnet18().state_dict(), 'runs/resnet18.pth')"
    python -m train.classify --config configs/folder_transfer.py --workdir runs/folder_features
    python -m train.classify --config configs/folder_transfer.py:finetune \\
        --workdir runs/folder_finetune
    python -m train.predict --workdir runs/folder_finetune runs/photo_folder/test/china_top

1. (default) the pretrained ResNet-18 with a new 4-class `head`, everything else frozen
   (`transfer.freeze_backbone`): feature extraction;
2. `:finetune` starts from run 1 (`transfer.init_from`) and trains every layer at a tenth of the
   learning rate.
Both preprocess as the weights expect (zoo.pretrained_config: resize the shorter side, centre
crop by 0.875, ImageNet's mean/std); the first line of each run says so.

Measured on a 2-core CPU shared with a dozen other jobs (2,371 s of wall time for 80 steps): the
frozen stage ends at accuracy 0.2500 on the 32
held-out training crops (best checkpoint: step 32) and 0.2500 on the 40 test crops, which is
chance for four classes, while its training batches reach 0.55. The `:finetune` stage was stopped
at step 64 of 80 for lack of time: accuracy 0.9375 (30 of 32) on the held-out crops at steps 48
and 64; it has no test figure yet.

What these figures mean: the weights are random, so the frozen stage fits a linear head on
random convolutional features of 64x64 crops, and those do not separate the four classes; the
figures show that the mechanics run, not what ImageNet features give. The fine-tuning stage
trains the network from that random start at a low learning rate.

For your own images and real weights:
    --config.data.dataset=folder:/path/photos (one subfolder per class, or train/ and test/)
    --config.model=resnet50 --config.transfer.pretrained=resnet50:/path/resnet50-0676ba61.pth
    --config.data.image_size='()'  (the weights' own 224x224; 64x64 here to save CPU time)
"""

from configs import classify_base, common

FOLDER = 'runs/photo_folder'
WEIGHTS = 'resnet18:runs/resnet18.pth'
FEATURES_WORKDIR = 'runs/folder_features'


def get_config(variant: str = ''):
  """`:finetune`: every layer trained, starting from the frozen run in FEATURES_WORKDIR."""
  finetune = common.parse_variant('configs/folder_transfer.py', variant, ('finetune',))
  config = classify_base.get_config()
  config.model = 'resnet18'
  config.data.dataset = f'folder:{FOLDER}'
  # Normalization, resize and crop follow the weights (train/core/transfer.py).
  config.data.image_size = (64, 64)
  # 32 of the 160 training crops (stratified) pick the best checkpoint; the test crops are
  # scored once, at the end.
  config.data.validation_split = 0.2
  config.data.augment.flip = True
  config.data.shards = 1
  config.batch_size = 16
  config.eval_batch_size = 40
  config.num_epochs = 10.0
  config.eval_every_epochs = 2.0
  config.checkpoint_every_epochs = 2.0
  config.log_every_steps = 16
  config.optim.learning_rate = 1e-3
  if finetune:
    config.transfer.init_from = FEATURES_WORKDIR
    config.optim.learning_rate /= 10
  else:
    config.transfer.pretrained = WEIGHTS
    config.transfer.freeze_backbone = True
  return config
