"""Inputs the stock Model Garden classification reader lacks: offline MNIST and CIFAR's pad-and-crop augmentation.

Model Garden's classification reader decodes JPEG records; MNIST here comes from memory (or a prepared TFDS
directory), so the task routes a data config whose `tfds_name` is 'mnist' to `mnist_inputs` instead. The stock parser
only knows ImageNet-style area crops, so CIFAR's "pad 4, crop 32" runs on its batches (`random_pad_and_crop`).
"""
from typing import Optional

import tensorflow as tf
from official.core import config_definitions as cfg

from tfmot_rigl.data import mnist

MNIST_TFDS_NAME = mnist.TFDS_NAME


def is_mnist(params: cfg.DataConfig) -> bool:
  return params.tfds_name == MNIST_TFDS_NAME


def mnist_inputs(params: cfg.DataConfig, input_context: Optional[tf.distribute.InputContext] = None,
                 seed: Optional[int] = None, start_step: int = 0) -> tf.data.Dataset:
  """Batches of (image float32 [b, 28, 28, 1] in [0, 1], label int32 [b]); training data shuffled and repeated.

  Labels stay integers: the task one-hot encodes them itself when its loss asks for it (`losses.one_hot`).

  Training batches are a deterministic function of the seed (`params.seed`, else `seed`) and the step: every input
  pipeline shuffles the same stream into global batches and takes its own slice of each, so step k sees the same
  examples with one worker or many, and a run resumed at `start_step` (the restored checkpoint's step) skips the
  batches already trained on instead of replaying the data from the start.
  """
  split = params.tfds_split or ('train' if params.is_training else 'test')
  dataset = mnist.mnist_dataset(split, data_dir=params.tfds_data_dir or None)
  global_batch_size = params.global_batch_size
  batch_size = global_batch_size
  pipelines, pipeline_id = 1, 0
  if input_context:
    batch_size = input_context.get_per_replica_batch_size(global_batch_size)
    pipelines, pipeline_id = input_context.num_input_pipelines, input_context.input_pipeline_id
  if not params.is_training:
    if pipelines > 1:
      dataset = dataset.shard(pipelines, pipeline_id)
    dataset = dataset.batch(batch_size, drop_remainder=params.drop_remainder)
    return dataset.prefetch(tf.data.AUTOTUNE)
  if global_batch_size % pipelines:
    raise ValueError(f'task.train_data.global_batch_size={global_batch_size} must be divisible by the '
                     f'{pipelines} input pipelines (workers).')
  seed = params.seed if params.seed is not None else seed
  dataset = dataset.shuffle(max(params.shuffle_buffer_size, global_batch_size), seed=seed,
                            reshuffle_each_iteration=True)
  # The Orbit train loop draws a fixed number of steps from one iterator, as Model Garden's readers expect.
  dataset = dataset.repeat().skip(start_step * global_batch_size).batch(global_batch_size, drop_remainder=True)
  if pipelines > 1:
    share = global_batch_size // pipelines
    dataset = dataset.map(lambda images, labels: (images[pipeline_id * share:(pipeline_id + 1) * share],
                                                  labels[pipeline_id * share:(pipeline_id + 1) * share]))
  if batch_size != global_batch_size // pipelines:  # several replicas on this worker: one batch each per step
    dataset = dataset.unbatch().batch(batch_size, drop_remainder=True)
  return dataset.prefetch(tf.data.AUTOTUNE)


def random_pad_and_crop(padding: int):
  """A batch map: zero-pad each image by `padding` pixels per side, then crop a random window of the original size."""
  def augment(images, labels):
    window = images.shape[1:]  # static, so the model still sees fully defined shapes
    padded = tf.pad(images, [[0, 0], [padding, padding], [padding, padding], [0, 0]])
    cropped = tf.map_fn(lambda image: tf.image.random_crop(image, window), padded,
                        fn_output_signature=tf.TensorSpec(window, images.dtype))
    return cropped, labels
  return augment


# Input files up to this size in all are read in full before a run (every record's framing and schema); larger
# inputs (ImageNet: ~140 GB) only their first record, as a full scan would take longer than many runs.
FULL_SCAN_BYTES = 256 * 2**20
JPEG_MAGIC = b'\xff\xd8\xff'


def check_data(params: cfg.DataConfig, what: str) -> None:
  """ValueError (one line) when the data of a data config cannot be read; run before anything is written.

  MNIST from a TFDS data_dir: its metadata and every record are checked (`tfmot_rigl.data.mnist`). TFRecord input
  (`input_path`, not TFDS): the files must exist, and their records must be tf.train.Examples with the reader's image
  (JPEG) and label features — every record of inputs up to FULL_SCAN_BYTES (a garbage tail or a record of another
  schema in the middle is caught), the first record of the first file of larger ones. A wrong path or a file of
  another format is caught here. `what` names the block.
  """
  if is_mnist(params):
    if params.tfds_data_dir:
      split = params.tfds_split or ('train' if params.is_training else 'test')
      mnist.check_prepared_split(split, params.tfds_data_dir)
    return
  if params.tfds_name or not params.input_path:
    return
  patterns = params.input_path if isinstance(params.input_path, (list, tuple)) else str(params.input_path).split(',')
  files = [f for pattern in patterns if pattern for f in sorted(tf.io.gfile.glob(pattern))]
  if not files:
    raise ValueError(f'{what}.input_path={params.input_path!r} matches no file; point it at TFRecord files '
                     '(e.g. /data/imagenet/train*).')
  full_scan = sum(tf.io.gfile.stat(f).length for f in files) <= FULL_SCAN_BYTES
  keys = (params.image_field_key, params.label_field_key)
  for path in files if full_scan else files[:1]:

    def check(index, record, path=path):
      problem = mnist.example_with_features(record, keys)
      if not problem and index == 0:
        image = tf.train.Example.FromString(record).features.feature[params.image_field_key].bytes_list.value
        if not image or not image[0].startswith(JPEG_MAGIC):
          problem = f'a tf.train.Example whose {params.image_field_key} is not a JPEG image'
      if problem:
        raise ValueError(f"{what}.input_path file '{path}' holds records the classification reader cannot read: "
                         f'record {index} is {problem}; it needs tf.train.Examples with {keys[0]} (JPEG bytes) and '
                         f'{keys[1]} (int64), as in Model Garden\'s ImageNet TFRecords.')

    try:
      mnist.count_records(path, limit=None if full_scan else 1, check=check)
    except tf.errors.OpError as error:
      reason = str(error.message).strip().splitlines()[0]
      raise ValueError(f"{what}.input_path file '{path}' is not a readable TFRecord file ({reason}); point "
                       'input_path at TFRecord files.') from None
