"""Training for the zoo models: input pipelines, parallelism, checkpoints, metrics, entry points."""
