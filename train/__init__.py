"""Training for the zoo models: input pipelines, parallelism, checkpoints, metrics, entry points."""

import os

# TensorFlow runs only the input pipeline; its start-up notices (including the one oneDNN prints
# at import whatever the log level) would bury our own messages.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
