"""A TFDS image classification dataset as a data source, prepared (downloaded) on first use."""

import tensorflow as tf
import tensorflow_datasets as tfds

from train.core.errors import UserError
from train.data import offline  # noqa: F401  (registers the offline datasets)


class TfdsSource:
  """Class names, split sizes, per-process reading and decoding of a TFDS dataset."""

  def __init__(self, name: str, data_dir: str):
    self.name = name
    self._builder = prepared_builder(name, data_dir or None)
    info = self._builder.info
    keys = info.supervised_keys
    self._image_key, self._label_key = keys if _is_pair_of_str(keys) else ('image', 'label')
    image, label = (info.features[k] if k in info.features else None
                    for k in (self._image_key, self._label_key))
    if not (isinstance(image, tfds.features.Image)
            and isinstance(label, tfds.features.ClassLabel)):
      raise UserError(f'data.dataset={name!r} is not an image classification dataset: '
                      f'its features are {info.features}.')
    self._image_feature = image
    self.class_names = tuple(label.names)
    self.image_shape = image.shape

  def num_examples(self, split: str) -> int:
    # What the dataset itself says (TFDS knows it without reading): the same as `info.splits`,
    # and also right under `tfds.testing.mock_data`, which may have no split metadata.
    return int(self._dataset(split).cardinality())

  def read(self, split: str, index: int, count: int) -> tf.data.Dataset:
    """Process `index` of `count`'s share, in a fixed order: {'image': undecoded, 'label'}."""
    ds = self._dataset(tfds.even_splits(split, n=count, drop_remainder=False)[index])
    return ds.map(lambda ex: {'image': ex[self._image_key], 'label': ex[self._label_key]})

  def decode(self, image: tf.Tensor) -> tf.Tensor:
    return self._image_feature.decode_example(image)

  def check_disjoint(self, split: str, other: str, field: str, other_field: str) -> None:
    """UserError if the TFDS split strings `split` and `other` share an example."""
    ranges = {}
    for name, spec in ((field, split), (other_field, other)):
      try:
        instructions = tfds.core.ReadInstruction.from_spec(spec).to_absolute(
            self._builder.info.splits)
      except (ValueError, KeyError) as e:
        raise UserError(f'{name}={spec!r}: {e}') from None
      ranges[name] = [(i.splitname, i.from_ or 0, self._split_size(i.splitname) if i.to is None
                       else i.to) for i in instructions]
    for base, start, stop in ranges[field]:
      for other_base, other_start, other_stop in ranges[other_field]:
        if base == other_base and max(start, other_start) < min(stop, other_stop):
          raise UserError(f'{field}={split!r} and {other_field}={other!r} share examples of '
                          f'{self.name} split {base!r}: make them disjoint, e.g. '
                          f"train_split='{base}[:90%]' and validation_split='{base}[90%:]'.")

  def _split_size(self, name: str) -> int:
    return self._builder.info.splits[name].num_examples

  def _dataset(self, split) -> tf.data.Dataset:
    try:
      return self._builder.as_dataset(
          split=split,
          # A fixed order, so that the pipeline's seeded shuffling is the only randomness.
          shuffle_files=False,
          # Decoded later, so skipping examples on resume is cheap.
          decoders={self._image_key: tfds.decode.SkipDecoding()})
    except ValueError as e:  # TFDS's message names the split and what it should be.
      raise UserError(f'{self.name}: {e} (data.train_split / data.eval_split)') from e


def _is_pair_of_str(keys) -> bool:
  return isinstance(keys, tuple) and len(keys) == 2 and all(isinstance(k, str) for k in keys)


def prepared_builder(name: str, data_dir: str | None) -> tfds.core.DatasetBuilder:
  """`tfds.builder(name)`, downloaded and prepared in `data_dir` if it is not yet."""
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except (tfds.core.registered.DatasetNotFoundError, ValueError) as e:  # unknown, malformed
    raise UserError(f'data.dataset={name!r} is not a TFDS dataset (see '
                    'https://www.tensorflow.org/datasets/catalog/overview) nor '
                    "'folder:/path/to/images'.") from e
  try:
    builder.download_and_prepare()
  except Exception as e:  # pylint: disable=broad-except  (network, disk, manual files: fixable)
    # Processes sharing a data_dir race to prepare it; a loser finds the winner's copy.
    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
      reason = f'{type(e).__name__}: {e}'.splitlines()[0]
      raise UserError(
          f'cannot download or prepare TFDS dataset {name!r} in {builder.data_dir_root} '
          f'({reason}). Prepare it where it can be: `tfds build {name} --data_dir=DIR` (datasets '
          'that need a manual download also take --manual_dir=FILES), then set '
          'data.data_dir=DIR.') from e
  return builder
