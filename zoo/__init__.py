"""zoo: pure flax.linen computer-vision models, importable with nothing but jax and flax."""

from zoo import (  # register the classifiers  # register the generative models
           alexnet,
           cnn,
           dcgan,
           decoders,
           inception,  # register Inception-v3, the FID network
           lenet,
           pixelcnn,  # register the PixelCNNs
           resnet,
           vae,
           vgg,
)
from zoo.features import FeatureInfo, extract_features, feature_info
from zoo.pretrained_config import Preprocessing, PretrainedConfig, pretrained_config
from zoo.registry import (
           ModelInfo,
           create_model,
           list_models,
           model_info,
           register_model,
)
from zoo.weights import ConversionError, load_pretrained, save_pretrained

__all__ = ['ConversionError', 'FeatureInfo', 'ModelInfo', 'PretrainedConfig', 'Preprocessing',
           'create_model', 'extract_features', 'feature_info', 'list_models', 'load_pretrained',
           'model_info', 'pretrained_config', 'register_model', 'save_pretrained']
