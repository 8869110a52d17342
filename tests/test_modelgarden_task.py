"""The sparse Model Garden task: every experiment with every method trains in Orbit's loop; masks update on time.

Models are shrunk (widths, depth, 32-pixel images, 4 classes) and read tiny generated JPEG TFRecords, so each run is
a few seconds; the experiments' real sizes stay in their configs.
"""

import numpy as np
import pytest
import tensorflow as tf
from official.core import exp_factory
from official.core import task_factory
from official.core import train_lib

from tfmot_rigl import keras as sparse_keras
from tfmot_rigl.core import distributions
from tfmot_rigl.modelgarden import configs
from tfmot_rigl.modelgarden import inputs
from tfmot_rigl.modelgarden import task as sparse_task

IMAGE_SIZE = 32
NUM_CLASSES = 4
BATCH_SIZE = 4

# Small members of each experiment's model family: same block types, a fraction of the width and depth.
TINY_BACKBONES = {
    'resnet_rigl': {'resnet': {'model_id': 10, 'depth_multiplier': 0.0625}},
    'mobilenet_rigl': {'mobilenet': {'filter_size_scale': 0.25}},
    'wrn_cifar10_rigl': {'wide_resnet': {'depth': 10, 'width_multiplier': 1}},
    'mnist_rigl': {'mlp': {'hidden_sizes': [16, 8]}},
}


@pytest.fixture(scope='module')
def jpeg_records(tmp_path_factory):
  """16 random JPEG images with labels in Model Garden's classification TFRecord format."""
  path = str(tmp_path_factory.mktemp('records') / 'images.tfrecord')
  rng = np.random.default_rng(0)
  with tf.io.TFRecordWriter(path) as writer:
    for index in range(16):
      image = rng.integers(0, 256, (IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
      example = tf.train.Example(features=tf.train.Features(feature={
          'image/encoded': tf.train.Feature(bytes_list=tf.train.BytesList(value=[tf.io.encode_jpeg(image).numpy()])),
          'image/class/label': tf.train.Feature(int64_list=tf.train.Int64List(value=[index % NUM_CLASSES])),
      }))
      writer.write(example.SerializeToString())
  return path


def tiny_experiment(name, records, sparsity=None, train_steps=2, steps_per_loop=2, runtime=None):
  """The registered experiment `name`, shrunk to a few-second run on `records`, validated and locked."""
  params = exp_factory.get_exp_config(name)
  data = {'input_path': records, 'tfds_name': '', 'tfds_split': '', 'global_batch_size': BATCH_SIZE,
          'shuffle_buffer_size': 16, 'drop_remainder': True}
  params.override({
      'runtime': dict({'enable_xla': False}, **(runtime or {})),
      'task': {'model': {'input_size': [IMAGE_SIZE, IMAGE_SIZE, 3], 'num_classes': NUM_CLASSES,
                         'backbone': TINY_BACKBONES[name]},
               'train_data': data, 'validation_data': dict(data, is_training=False),
               'sparsity': dict({'sparsity': 0.5, 'update_frequency': 1}, **(sparsity or {}))},
      'trainer': {'train_steps': train_steps, 'steps_per_loop': steps_per_loop, 'summary_interval': steps_per_loop,
                  'checkpoint_interval': steps_per_loop, 'validation_steps': 1, 'validation_interval': train_steps},
  })
  params.validate()
  params.lock()
  return params


def train(params, model_dir, task=None, mode='train', strategy=None):
  strategy = strategy or tf.distribute.get_strategy()
  with strategy.scope():
    task = task or task_factory.get_task(params.task, logging_dir=str(model_dir))
  model, logs = train_lib.run_experiment(distribution_strategy=strategy, task=task, mode=mode, params=params,
                                         model_dir=str(model_dir))
  return model, logs


# Every registered experiment with every method (on tiny widths and inputs, a few steps each).
MATRIX = [(name, method) for name in sorted(TINY_BACKBONES) for method in configs.METHODS]


@pytest.mark.parametrize('name, method', MATRIX)
def test_experiment_trains_with_method(name, method, jpeg_records, tmp_path):
  # MobileNet also sparsifies its depthwise kernels here, so its blocks carry two masked kernels each.
  params = tiny_experiment(name, jpeg_records, sparsity={'method': method,
                                                         'sparsify_depthwise': name == 'mobilenet_rigl'})
  model, _ = train(params, tmp_path)

  assert tf.train.latest_checkpoint(str(tmp_path)).endswith('ckpt-2')
  wrappers = sparse_keras.sparse_wrappers(model)
  if method == 'dense':
    assert not wrappers
    return
  assert wrappers
  if method == 'magnitude':
    # TFMOT's own wrapper and PolynomialDecay schedule; after two steps pruning has just begun.
    assert all(type(w).__name__ == 'PruneLowMagnitude' for w in wrappers)
    return
  for wrapper in wrappers:
    for index, (weight, mask, _) in enumerate(wrapper.pruning_vars):
      weight, mask = weight.numpy(), mask.numpy()
      # Exactly floor(s·N) zeros per kernel, before and after every update (SNIP: after its one shot).
      expected = distributions.nonzeros(mask.size, wrapper.sparsity_of(index))
      assert mask.sum() == expected, f'{wrapper.name}[{index}]'
      # The network computes with W ⊙ M: no weight outside the mask survives a step.
      assert np.all(weight[mask == 0] == 0), f'{wrapper.name}[{index}]'


class MaskChangeRecordingTask(sparse_task.SparseImageClassificationTask):
  """Records, inside the compiled train loop, at which optimizer steps any mask changed."""

  def __init__(self, params, max_steps, **kwargs):
    super().__init__(params, **kwargs)
    self.changed_at = tf.Variable(tf.zeros([max_steps], tf.int32), trainable=False)

  def train_step(self, inputs, model, optimizer, metrics=None):
    step = tf.identity(optimizer.iterations)
    masks = [mask for wrapper in sparse_keras.sparse_wrappers(model) for _, mask, _ in wrapper.pruning_vars]
    before = [tf.identity(mask) for mask in masks]
    logs = super().train_step(inputs, model, optimizer, metrics)
    with tf.control_dependencies(tf.nest.flatten(logs)):
      changed = tf.reduce_any([tf.reduce_any(tf.not_equal(b, m)) for b, m in zip(before, masks)])
    self.changed_at.scatter_nd_update([[step]], [tf.cast(changed, tf.int32)])
    return logs


@pytest.mark.parametrize('method, expected_steps', [('set', [3, 6, 9]), ('static', [])])
def test_masks_change_exactly_at_update_steps_within_a_loop(method, expected_steps, jpeg_records, tmp_path):
  # steps_per_loop (12) > ΔT (3): a host-side action run once per loop could not hit steps 3, 6 and 9.
  params = tiny_experiment('mnist_rigl', jpeg_records, train_steps=12, steps_per_loop=12, sparsity={
      'method': method, 'update_frequency': 3, 'begin_step': 3, 'end_step': 9, 'drop_fraction_anneal': 'constant'})
  task = MaskChangeRecordingTask(params.task, max_steps=12, logging_dir=str(tmp_path))
  train(params, tmp_path, task=task)
  assert np.flatnonzero(task.changed_at.numpy()).tolist() == expected_steps


def test_two_replicas_keep_identical_masks(jpeg_records, tmp_path):
  # Mirrored training on the two logical CPUs of conftest: every replica must draw the same drops and grows.
  # ReductionToOneDevice: no collective ops, whose instance keys clash with other MirroredStrategy tests in-process.
  strategy = tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'], cross_device_ops=tf.distribute.ReductionToOneDevice())
  params = tiny_experiment('mnist_rigl', jpeg_records, train_steps=4, steps_per_loop=4, sparsity={'method': 'set'})
  model, _ = train(params, tmp_path, strategy=strategy)
  for wrapper in sparse_keras.sparse_wrappers(model):
    for weight, mask, _ in wrapper.pruning_vars:
      for variable in (weight, mask):
        first, second = (value.numpy() for value in variable.values)
        np.testing.assert_array_equal(first, second, err_msg=variable.name)


def test_fractional_window_uses_trainer_steps(jpeg_records):
  params = tiny_experiment('mnist_rigl', jpeg_records, train_steps=40, steps_per_loop=40,
                           sparsity={'begin_step': 0.25, 'end_step': 0.5})
  model = task_factory.get_task(params.task).build_model()
  schedule = sparse_keras.sparse_wrappers(model)[0].pruning_schedule
  assert (schedule.begin_step, schedule.end_step) == (10, 20)


def test_checkpoint_restores_masks_and_algorithm_state(jpeg_records, tmp_path):
  params = tiny_experiment('wrn_cifar10_rigl', jpeg_records, sparsity={'method': 'snfs'})
  trained, _ = train(params, tmp_path)
  fresh = task_factory.get_task(params.task).build_model()

  def sparse_state(model):  # masks, TFMOT thresholds and steps, SNFS gradient averages; in model order
    return [v.numpy() for w in sparse_keras.sparse_wrappers(model) for v in w.non_trainable_weights]

  names = [v.name for w in sparse_keras.sparse_wrappers(trained) for v in w.non_trainable_weights]
  assert any('mask' in name for name in names) and any('grad_ema' in name for name in names)
  assert any(np.any(a != b) for a, b in zip(sparse_state(trained), sparse_state(fresh)))
  tf.train.Checkpoint(model=fresh).read(tf.train.latest_checkpoint(str(tmp_path))).expect_partial()
  for name, restored, saved in zip(names, sparse_state(fresh), sparse_state(trained)):
    np.testing.assert_array_equal(restored, saved, err_msg=name)


def test_mnist_input_batches_real_mnist():
  params = exp_factory.get_exp_config('mnist_rigl')
  dataset = task_factory.get_task(params.task).build_inputs(params.task.validation_data)
  images, labels = next(iter(dataset))
  assert images.shape == (1000, 28, 28, 1) and images.dtype == tf.float32
  assert labels.shape == (1000,) and set(np.unique(labels.numpy())) == set(range(10))
  assert 0.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 1.0


def test_pad_and_crop_takes_a_window_of_the_padded_image():
  images = tf.reshape(tf.range(2 * 6 * 6, dtype=tf.float32) + 1.0, [2, 6, 6, 1])
  cropped, labels = inputs.random_pad_and_crop(2)(images, tf.constant([0, 1]))
  assert cropped.shape == images.shape and labels.numpy().tolist() == [0, 1]
  padded = np.pad(images.numpy(), [[0, 0], [2, 2], [2, 2], [0, 0]])
  for index in range(2):
    windows = [padded[index, y:y + 6, x:x + 6] for y in range(5) for x in range(5)]
    assert any(np.array_equal(cropped[index].numpy(), window) for window in windows)


def test_create_optimizer_needs_the_model_first():
  params = exp_factory.get_exp_config('mnist_rigl')
  task = task_factory.get_task(params.task)
  with pytest.raises(ValueError, match='build_model'):
    task.create_optimizer(params.trainer.optimizer_config, params.runtime)
