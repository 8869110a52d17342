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


def mnist_inputs(params: cfg.DataConfig,
                 input_context: Optional[tf.distribute.InputContext] = None) -> tf.data.Dataset:
  """Batches of (image float32 [b, 28, 28, 1] in [0, 1], label int32 [b]); training data shuffled and repeated.

  Labels stay integers: the task one-hot encodes them itself when its loss asks for it (`losses.one_hot`).
  """
  split = params.tfds_split or ('train' if params.is_training else 'test')
  dataset = mnist.mnist_dataset(split, data_dir=params.tfds_data_dir or None)
  batch_size = params.global_batch_size
  if input_context:
    batch_size = input_context.get_per_replica_batch_size(batch_size)
    if input_context.num_input_pipelines > 1:
      dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
  if params.is_training:
    dataset = dataset.shuffle(max(params.shuffle_buffer_size, batch_size), seed=params.seed,
                              reshuffle_each_iteration=True)
    # The Orbit train loop draws a fixed number of steps from one iterator, as Model Garden's readers expect.
    dataset = dataset.repeat()
  dataset = dataset.batch(batch_size, drop_remainder=params.drop_remainder)
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
