"""Each Python API misuse of issue 18 gets one clear ValueError/TypeError at the call that caused it; blocks that do
not tile a kernel mask it per element with one line; TFMOT's block_size spelling is accepted."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from official.core import exp_factory
from official.core import task_factory

import tfmot_rigl
import tfmot_rigl.modelgarden  # noqa: F401  (registers the experiments)


pytestmark = pytest.mark.usefixtures("library_notes_shown")


def test_knob_and_distribution_misuses_fail_at_the_call():
  with pytest.raises(ValueError, match=r"grow_init='random_normal_0' divides by 0.*random_normal_2"):
    tfmot_rigl.RigL(grow_init="random_normal_0")
  with pytest.raises(ValueError, match=r"grow_init='grad_scale_0' divides by 0"):
    tfmot_rigl.RigL(grow_init="grad_scale_0")
  for shape in [(0, 3), (-2, 3), ()]:
    with pytest.raises(ValueError, match=r"Layer 'a' has kernel shape .* positive integers"):
      tfmot_rigl.layer_sparsities({"a": shape, "b": (3, 3)}, 0.5)
  for make in (lambda: tfmot_rigl.RigL(update_frequency=2.5), lambda: tfmot_rigl.Magnitude(update_frequency=2.5),
               lambda: tfmot_rigl.make_algorithm("set", update_frequency=2.5),
               lambda: tfmot_rigl.SparseSchedule(0.5, update_frequency=2.5)):
    with pytest.raises(ValueError, match=r"update_frequency=2.5 must be a positive number of steps"):
      make()


def test_tfmot_block_size_spelling_is_block_shape():
  assert tfmot_rigl.RigL(block_size=(1, 16)) == tfmot_rigl.RigL(block_shape=(1, 16))
  assert tfmot_rigl.make_algorithm("magnitude", block_size=[4, 1]).block_shape == (4, 1)
  with pytest.raises(TypeError, match=r"both block_size=\(1, 16\) \(TFMOT's name\) and block_shape"):
    tfmot_rigl.SET(block_size=(1, 16), block_shape=(1, 16))


def test_lstm_is_sparsified_as_tfmot_prunes_it():
  keras.utils.set_random_seed(0)
  base = keras.Sequential([keras.layers.LSTM(8, input_shape=(5, 3), name="lstm"), keras.layers.Dense(2, name="out")])
  model = tfmot_rigl.prune_sparse(base, tfmot_rigl.SET(update_frequency=1), sparsity=0.5, total_steps=4)
  (wrapper,) = tfmot_rigl.sparse_wrappers(model)
  assert [tuple(k.shape) for k, _, _ in wrapper.pruning_vars] == [(3, 32), (8, 32)]  # kernel, recurrent_kernel
  optimizer = tfmot_rigl.wrap_optimizer(keras.optimizers.Adam(0.01), model)
  x = tf.constant(np.random.RandomState(0).randn(4, 5, 3).astype("float32"))
  masks = [m.numpy().copy() for _, m, _ in wrapper.pruning_vars]
  for _ in range(2):  # eager steps (an LSTM's graph is slow to trace); masks update at steps 0 and 1
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(tf.square(model(x, training=True)))
    optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
  assert any(not np.array_equal(a, m.numpy()) for a, (_, m, _) in zip(masks, wrapper.pruning_vars))
  for kernel, mask, _ in wrapper.pruning_vars:
    assert np.count_nonzero(kernel.numpy()[mask.numpy() == 0]) == 0


def _mnist_task(overrides):
  params = exp_factory.get_exp_config("mnist_rigl")  # not validated: task.sparsity.total_steps stays unset
  params.override({"task": {"sparsity": overrides}})
  return task_factory.get_task(params.task)


def test_readme_int8_block_shape_builds_mnist_with_untiled_layers_per_element(capsys):
  model = _mnist_task({"block_shape": [16, 1], "total_steps": 100}).build_model()
  assert "block_shape=[16, 1] does not tile the [in, out] kernel of " in capsys.readouterr().err
  for wrapper in tfmot_rigl.sparse_wrappers(model):
    kernel, mask, _ = wrapper.pruning_vars[0]
    n_in, n_out = kernel.shape
    mask = mask.numpy()
    in_blocks = np.array_equal(mask, np.repeat(mask[::16], 16, axis=0)) if n_in % 16 == 0 else False
    assert in_blocks == (n_in % 16 == 0), wrapper.layer.name  # 784 inputs: blocks; 300 or 100: per element
    assert 0 < mask.mean() < 1


def test_model_garden_custom_step_names_the_config_field_not_prune_sparse():
  task = _mnist_task({"update_frequency": 1})
  model = task.build_model()
  optimizer = task.create_optimizer(exp_factory.get_exp_config("mnist_rigl").trainer.optimizer_config)
  x, y = tf.zeros([2, 28, 28, 1]), tf.constant([0, 1])

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, model(x, training=True), True))
    optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))

  with pytest.raises(ValueError, match=r"end_step=0.75 is a fraction of training, and task.sparsity.total_steps is "
                                       r"not set") as raised:
    step()
  assert "prune_sparse" not in str(raised.value)
