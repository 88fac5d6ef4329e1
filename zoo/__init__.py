"""zoo: pure flax.linen computer-vision models, importable with nothing but jax and flax."""

from zoo.registry import ModelInfo, create_model, list_models, model_info, register_model
from zoo.features import extract_features
from zoo import cnn, resnet, vgg  # register the classifiers
from zoo import dcgan, decoders, vae  # register the generative models
from zoo import pixelcnn  # register the PixelCNNs
from zoo import inception  # register Inception-v3, the FID network
from zoo import fcn, unet  # register the segmentation models
