"""MNIST input for the Model Garden task: the offline `mnist_dataset`, batched as Model Garden's readers batch.

Model Garden's classification reader decodes JPEG records; MNIST here comes from memory (or a prepared TFDS
directory), so the task routes a data config whose `tfds_name` is 'mnist' to this function instead.
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
