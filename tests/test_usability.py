"""Stock user code, written the way TFMOT's guides write it, runs with defaults or gets one clear line (issue 13)."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import tfmot_rigl


pytestmark = pytest.mark.usefixtures("library_notes_shown")


def _mlp():
  keras.utils.set_random_seed(0)
  return keras.Sequential([keras.layers.Dense(16, activation="relu", input_shape=(8,), name="hidden"),
                           keras.layers.Dense(2, name="logits")])


def _dataset(n=64, batch=8):
  x = np.random.RandomState(0).randn(n, 8).astype("float32")
  return tf.data.Dataset.from_tensor_slices((x, (x[:, 0] > 0).astype("int32"))).batch(batch)


def _fit(model, epochs=2, dataset=None):
  optimizer = tfmot_rigl.wrap_optimizer(keras.optimizers.SGD(0.1), model)
  model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  model.fit(dataset or _dataset(), epochs=epochs, verbose=0)
  return model


def _masks(model):
  return [mask.numpy().copy() for w in tfmot_rigl.sparse_wrappers(model) for _, mask, _ in w.pruning_vars]


def test_default_fractional_window_is_resolved_by_fit(capsys):
  model = tfmot_rigl.prune_sparse(_mlp(), algorithm=tfmot_rigl.RigL(update_frequency=2))  # end_step=0.75
  before = _masks(model)
  _fit(model)  # 2 epochs x 8 steps
  windows = {(w.pruning_schedule.begin_step, w.pruning_schedule.end_step) for w in tfmot_rigl.sparse_wrappers(model)}
  assert windows == {(0, 12)}
  assert any(not np.array_equal(a, b) for a, b in zip(before, _masks(model)))
  assert "steps 0 to 12 of this 16-step fit" in capsys.readouterr().err


def test_default_fractional_window_magnitude_is_resolved_by_fit():
  model = tfmot_rigl.prune_sparse(_mlp(), algorithm=tfmot_rigl.Magnitude(update_frequency=2), sparsity=0.5)
  _fit(model)
  schedule = tfmot_rigl.sparse_wrappers(model)[0].pruning_schedule
  assert (schedule.begin_step, schedule.end_step) == (0, 12)
  assert np.mean(_masks(model)[0]) < 0.9  # TFMOT's PolynomialDecay pruned it


def test_custom_loop_without_total_steps_says_to_pass_it():
  model = tfmot_rigl.prune_sparse(_mlp())
  optimizer = tfmot_rigl.wrap_optimizer(keras.optimizers.SGD(0.1), model)

  @tf.function
  def step(x, y):
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, model(x, training=True), True))
    optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))

  x, y = next(iter(_dataset()))
  with pytest.raises(ValueError, match="end_step=0.75 is a fraction of training.*pass total_steps"):
    step(x, y)


def test_fit_on_dataset_of_unknown_length_says_what_to_do():
  model = tfmot_rigl.prune_sparse(_mlp())
  unknown = _dataset().filter(lambda x, y: True)
  with pytest.raises(ValueError, match="pass steps_per_epoch to fit, or total_steps"):
    _fit(model, dataset=unknown)


def test_short_run_with_default_update_frequency_warns(capsys):
  tfmot_rigl.prune_sparse(_mlp(), total_steps=30)
  assert "this 30-step run updates them only at step 0" in capsys.readouterr().err
  _fit(tfmot_rigl.prune_sparse(_mlp()), epochs=1)
  assert "this 8-step run updates them only at step 0" in capsys.readouterr().err


def test_dense_passes_through_prune_and_wrap_optimizer():
  model = _mlp()
  assert tfmot_rigl.prune_sparse(model, "dense") is model
  optimizer = keras.optimizers.SGD(0.1)
  assert tfmot_rigl.wrap_optimizer(optimizer, model) is optimizer
  model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  model.fit(_dataset(), epochs=1, verbose=0)
  with pytest.raises(ValueError, match="no sparse layers; call tfmot_rigl.prune_sparse"):
    tfmot_rigl.wrap_optimizer(keras.optimizers.SGD(), _mlp())  # not through prune_sparse: still an error


def test_class_constructors_treat_knobs_as_make_algorithm_does():
  assert tfmot_rigl.SNIP(begin_step=0, drop_fraction=0.3) == tfmot_rigl.make_algorithm("snip", begin_step=0,
                                                                                     drop_fraction=0.3)
  assert tfmot_rigl.Static(update_frequency=5) == tfmot_rigl.Static()
  assert tfmot_rigl.RigL(update_frequency=5, momentum=0.5).update_frequency == 5
  with pytest.raises(TypeError, match=r"SNIP\(\) got unknown knob\(s\) \['begin_stpe'\]"):
    tfmot_rigl.SNIP(begin_stpe=0)


def test_layer_level_call_like_prune_low_magnitude():
  layer = tfmot_rigl.prune_sparse(keras.layers.Dense(16, activation="relu"), algorithm=tfmot_rigl.SET(
      update_frequency=2), sparsity=0.75)
  assert isinstance(layer, tfmot_rigl.SparseWrapper)
  model = keras.Sequential([keras.Input((8,)), layer, keras.layers.Dense(2)])
  before = _masks(model)
  _fit(model)  # its fractional window is resolved by fit too
  assert layer.pruning_schedule.end_step == 12
  mask = _masks(model)[0]
  assert mask.mean() == pytest.approx(0.25) and not np.array_equal(mask, before[0])
  with pytest.raises(ValueError, match="no sparsifiable weight"):
    tfmot_rigl.prune_sparse(keras.layers.ReLU())  # ReLU is built-free; still named
  with pytest.raises(ValueError, match="already wrapped"):
    tfmot_rigl.prune_sparse(layer)


def test_keras3_model_error_names_keras3_and_the_fix():
  import keras as keras3
  expected = r"Keras 3 Sequential.*Keras 3 API.*keras3\.prune_sparse.*import tf_keras as keras"
  with pytest.raises(ValueError, match=expected):
    tfmot_rigl.prune_sparse(keras3.Sequential([keras3.Input((3,)), keras3.layers.Dense(2)]))


def test_layers_left_dense_are_named_once_at_wrap_time(capsys):
  keras.utils.set_random_seed(0)
  inputs = keras.Input((8, 8, 3))
  x = keras.layers.Conv2D(8, 3, name="stem")(inputs)
  x = keras.layers.DepthwiseConv2D(3, name="dw")(x)
  x = keras.layers.Conv2D(16, 1, name="pw")(x)
  outputs = keras.layers.Dense(2, name="head")(keras.layers.GlobalAveragePooling2D()(x))
  tfmot_rigl.prune_sparse(keras.Model(inputs, outputs), "static", sparsity=0.5, exclude=["head"])
  lines = [line for line in capsys.readouterr().err.splitlines() if "left dense" in line]
  assert len(lines) == 1
  assert lines[0].startswith("tfmot_rigl: 2 of 4 conv/dense layers left dense")
  assert "depthwise (sparsify_depthwise=False) [dw]" in lines[0] and "excluded [head]" in lines[0]
