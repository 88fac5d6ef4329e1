"""zoo: pure flax.linen computer-vision models, importable with nothing but jax and flax."""

from zoo.registry import ModelInfo, create_model, list_models, model_info, register_model
from zoo.features import FeatureInfo, extract_features, feature_info
from zoo import alexnet, cnn, convnext, lenet, resnet, vgg, vit  # register the classifiers
from zoo import efficientnet, mobilenet  # register the mobile classifiers
from zoo import dcgan, decoders, vae  # register the generative models
from zoo import pixelcnn  # register the PixelCNNs
from zoo import inception  # register Inception-v3, the FID network
from zoo import fcn, unet  # register the segmentation models
from zoo.pretrained_config import PretrainedConfig, Preprocessing, pretrained_config
from zoo.weights import ConversionError, load_pretrained, save_pretrained

__all__ = ['ConversionError', 'FeatureInfo', 'ModelInfo', 'Preprocessing', 'PretrainedConfig',
           'create_model', 'extract_features', 'feature_info', 'list_models', 'load_pretrained',
           'model_info', 'pretrained_config', 'register_model', 'save_pretrained']
