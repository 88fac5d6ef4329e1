"""Anomaly scores from a trained VAE: `python -m train.anomaly --config C --workdir DIR`.

Give the config and workdir a `train.vae` run was given. The latest checkpoint in DIR scores
every image of `config.anomaly.split` (all classes, whatever `data.classes` trained on); a high
score means the model finds the image unlikely. `config.anomaly.score` is one of

- 'neg_elbo': the negative ELBO in nats, its reconstruction term averaged over
  `config.anomaly.num_samples` posterior samples (An & Cho 2015 score the reconstruction
  probability the same way);
- 'reconstruction_error': the squared error, summed over pixels, between the image and its
  reconstruction from the posterior mean (the autoencoder score).

Writes one row per image (position in the split, label, score) to
`DIR/anomaly/<score>_<split>.csv`, a grid of the highest-scoring images to
`DIR/images/anomaly_<score>_<split>_<step>.png`, and the summary to `DIR/metrics.jsonl` (split
'anomaly_<score>'). With `config.anomaly.anomalous_classes` (e.g.
(9,) after training on 0-8) it reports the AUROC of the score for telling those labels from
the rest (1: every anomaly scores above every normal image; 0.5: chance).
"""

import csv
import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import multihost_utils
from sklearn import metrics as sk_metrics

from train import vae as vae_train
from train.core import cli, loop, parallel
from train.core.errors import UserError
from train.core.restore import restore_state
from train.core.state import TrainState
from train.core.writer import MetricWriter
from train.data import pipeline as input_pipeline
from zoo import vae

SCORES = ('neg_elbo', 'reconstruction_error')
NUM_SHOWN = 32  # highest-scoring images in the grid


def anomaly_scores(params, x: jax.Array, rng: jax.Array, *, model: vae.VAE, score: str,
                   num_samples: int) -> jax.Array:
  """Per-image scores (B,) of images `x` as the likelihood scores them."""
  if score == 'reconstruction_error':
    reconstructions = model.apply({'params': params}, x, method='reconstruct')
    return jnp.sum(jnp.square(reconstructions - x), axis=(1, 2, 3))
  # The KL term is exact; the reconstruction term is a Monte Carlo average.
  neg_elbos = jax.vmap(lambda key: vae_train.negative_elbo(params, x, key, model=model)[0])(
      jax.random.split(rng, num_samples))
  return neg_elbos.mean(axis=0)


def score_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array, *,
               model: vae.VAE, binarize: str, score: str, num_samples: int) -> jax.Array:
  """Scores of a batch; `rng` fixes its binarization (if any) and posterior samples."""
  data_rng, sample_rng = jax.random.split(rng)
  x = vae_train.prepare_images(batch['image'], data_rng, model=model, binarize=binarize)
  return anomaly_scores(state.params, x, sample_rng, model=model, score=score,
                        num_samples=num_samples)


def auroc(scores: np.ndarray, is_anomaly: np.ndarray) -> float:
  """Area under the ROC curve of `scores` for telling `is_anomaly` from the rest."""
  return float(sk_metrics.roc_auc_score(is_anomaly, scores))


def _data_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`config.data` reading all classes of the scored split."""
  data = ml_collections.ConfigDict(config.data.to_dict())
  data.classes = ()
  data.eval_split = config.anomaly.split
  return data


def _write_csv(path: str, labels: np.ndarray, scores: np.ndarray) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w', newline='', encoding='utf-8') as f:
    writer = csv.writer(f)
    writer.writerow(('index', 'label', 'score'))
    writer.writerows((i, int(label), f'{score:.6g}')
                     for i, (label, score) in enumerate(zip(labels, scores)))


def score_dataset(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Scores `config.anomaly.split` with the latest checkpoint in `workdir`; returns the summary."""
  anomaly = config.anomaly
  if anomaly.score not in SCORES:
    raise UserError(f'config.anomaly.score={anomaly.score!r}: use one of {SCORES}')
  parallel.check_batch_size(config.eval_batch_size, 'eval_batch_size')
  mesh = parallel.make_mesh()
  data = _data_config(config)
  task = vae_train.VaeTask(config)
  state, step = restore_state(task, workdir, data_config=data, mesh=mesh)
  model, info = task.model, task.info

  score_fn = jax.jit(functools.partial(
      score_step, model=model, binarize=config.binarize, score=anomaly.score,
      num_samples=anomaly.num_samples))
  rng = jax.random.fold_in(jax.random.key(config.seed), 4)  # apart from the training streams
  parts = []
  for i, batch in enumerate(input_pipeline.make_eval_iterator(
      data, global_batch_size=config.eval_batch_size)):
    batch = parallel.shard_batch(batch, mesh)
    parts.append((score_fn(state, batch, jax.random.fold_in(rng, i)), batch['label'],
                  batch['mask'], batch['image']))
  scores, labels, mask, images = (
      np.concatenate([np.asarray(multihost_utils.process_allgather(p[k], tiled=True))
                      for p in parts]) for k in range(4))
  scores, labels, images = scores[mask], labels[mask], images[mask]

  summary = {'count': len(scores), 'mean_score': float(scores.mean())}
  if anomaly.anomalous_classes:
    is_anomaly = np.isin(labels, anomaly.anomalous_classes)
    if is_anomaly.all() or not is_anomaly.any():
      raise UserError(f'config.anomaly.anomalous_classes={tuple(anomaly.anomalous_classes)!r}: '
                      f'the {anomaly.split} split needs both anomalies and normal images')
    summary |= {'auroc': auroc(scores, is_anomaly),
                'mean_score_anomalous': float(scores[is_anomaly].mean()),
                'mean_score_normal': float(scores[~is_anomaly].mean())}
  if jax.process_index() == 0:
    _write_csv(os.path.join(workdir, 'anomaly', f'{anomaly.score}_{anomaly.split}.csv'), labels,
               scores)
  writer = MetricWriter(workdir)
  writer.write_scalars(step, f'anomaly_{anomaly.score}', summary)
  top = np.argsort(-scores)[:NUM_SHOWN]
  writer.write_images(step, f'anomaly_{anomaly.score}_{anomaly.split}', images[top],
                      scale=max(1, 64 // info.image_shape[0]), columns=8)
  writer.close()
  classes = ''
  if anomaly.anomalous_classes:
    classes = (f'; AUROC {summary["auroc"]:.4f} for labels {tuple(anomaly.anomalous_classes)} '
               f'(mean score {summary["mean_score_anomalous"]:.2f} vs '
               f'{summary["mean_score_normal"]:.2f} for the rest)')
  loop.say(f'Scored {len(scores)} {anomaly.split} images by {anomaly.score} with the checkpoint '
           f'at step {step}{classes}; highest-scoring labels: {labels[top[:16]].tolist()}')
  return summary


def main() -> None:
  cli.run(score_dataset, description=__doc__)


if __name__ == '__main__':
  main()
