"""Save -> load -> continue sparse training, in every tf_keras format, the way TFMOT users do it (issue 18)."""
import os
import tempfile

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
import tensorflow_model_optimization as tfmot

import tfmot_rigl

FORMATS = ["model.keras", "model.h5", "saved_model"]


pytestmark = pytest.mark.usefixtures("library_notes_shown")


def _data():
  x = np.random.RandomState(0).randn(64, 8).astype("float32")
  return x, (x[:, 0] > 0).astype("int32")


def _sparse_model(algorithm=None):
  keras.utils.set_random_seed(0)
  dense = keras.Sequential([keras.layers.Dense(16, activation="relu", input_shape=(8,)), keras.layers.Dense(2)])
  return tfmot_rigl.prune_sparse(dense, algorithm=algorithm or tfmot_rigl.RigL(update_frequency=2), sparsity=0.8)


def _compile(model, optimizer):
  model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))


def _fit(model, epochs=1):
  x, y = _data()
  model.fit(x, y, batch_size=8, epochs=epochs, verbose=0)  # 8 steps per epoch


def _masks(model):
  return [w.pruning_vars[0][1].numpy().copy() for w in tfmot_rigl.sparse_wrappers(model)]


def _windows(model):
  return [(w.pruning_schedule.begin_step, getattr(w.pruning_schedule.end_step, "fraction", None)
           or w.pruning_schedule.end_step) for w in tfmot_rigl.sparse_wrappers(model)]


def _save_and_stock_load(model, path, **save_kwargs):
  model.save(path, save_format="tf" if path.endswith("saved_model") else None, **save_kwargs)
  with tfmot.sparsity.keras.prune_scope():  # TFMOT's own loader, as its guide writes it
    return keras.models.load_model(path)


def _inactive_weights_are_zero(model):
  for wrapper in tfmot_rigl.sparse_wrappers(model):
    for kernel, mask, _ in wrapper.pruning_vars:
      assert np.all(kernel.numpy()[mask.numpy() == 0] == 0)


@pytest.mark.parametrize("name", FORMATS)
def test_saves_at_any_time_and_stock_load_then_fit_continues(tmp_path, name, capsys):
  model = _sparse_model()
  states = {"fresh": lambda m: None, "compiled": lambda m: _compile(m, keras.optimizers.SGD(0.1)),
            "wrapped": lambda m: _compile(m, tfmot_rigl.wrap_optimizer(keras.optimizers.SGD(0.1), m))}
  if name == "saved_model":  # (the slowest format: compiled-but-unwrapped is covered by the other two)
    del states["compiled"]
  for state, prepare in states.items():  # before the first fit: compiled or not, wrapped optimizer or not
    prepare(model)
    loaded = _save_and_stock_load(model, str(tmp_path / f"{state}_{name}"))
    assert [type(w) for w in tfmot_rigl.sparse_wrappers(loaded)] == [tfmot_rigl.SparseWrapper] * 2
    for before, after in zip(_masks(model), _masks(loaded)):
      np.testing.assert_array_equal(before, after)
    assert _windows(loaded) == [(0, 0.75)] * 2  # still a fraction of the training to come
    assert [w.algorithm for w in tfmot_rigl.sparse_wrappers(loaded)] == [tfmot_rigl.RigL(update_frequency=2)] * 2
    assert [w.pruning_schedule.sparsity for w in tfmot_rigl.sparse_wrappers(loaded)] == [
        w.pruning_schedule.sparsity for w in tfmot_rigl.sparse_wrappers(model)]
  if name == "saved_model":  # TF's own SavedModel writer, on the uncompiled fresh model too
    tf.saved_model.save(_sparse_model(), str(tmp_path / "tf_saved_model"))
    assert tf.saved_model.load(str(tmp_path / "tf_saved_model")) is not None
  # The stock loader gives a plain SGD back: the first step of fit wraps it, the window resolves, masks move.
  assert not isinstance(loaded.optimizer, type(model.optimizer))
  before = _masks(loaded)
  capsys.readouterr()
  _fit(loaded, epochs=2)
  err = capsys.readouterr().err
  assert "the compiled SGD now drives sparse training" in err and "steps 0 to 12 of this 16-step fit" in err
  assert _windows(loaded) == [(0, 12)] * 2
  assert any(not np.array_equal(a, b) for a, b in zip(before, _masks(loaded)))
  _inactive_weights_are_zero(loaded)

  # Resolved windows survive too; a fit after the window closed says so once, and load_model(total_steps=)
  # re-resolves the fraction over the training still to come, so masks move again.
  path = str(tmp_path / f"trained_{name}")
  again = _save_and_stock_load(loaded, path)
  assert _windows(again) == [(0, 12)] * 2
  if name != "saved_model":  # a SavedModel does not keep the optimizer's state; wrapping picks the step up
    assert int(again.optimizer.iterations.numpy()) == 16
  before = _masks(again)
  _fit(again)
  err = capsys.readouterr().err
  assert err.count("this fit starts at step 16, after the mask update window (steps 0 to 12) closed") == 1
  assert "tfmot_rigl.load_model(path, total_steps=" in err
  for a, b in zip(before, _masks(again)):
    np.testing.assert_array_equal(a, b)
  rebased = tfmot_rigl.load_model(path, total_steps=16)
  assert _windows(rebased) == [(0, 28)] * 2  # the fraction over steps 16..32; a step number (0) stays
  _fit(rebased, epochs=2)
  assert "closed" not in capsys.readouterr().err
  assert any(not np.array_equal(a, b) for a, b in zip(before, _masks(rebased)))
  _inactive_weights_are_zero(rebased)


def test_magnitude_saves_before_fit_and_resumes_its_window(tmp_path):
  model = _sparse_model(tfmot_rigl.Magnitude(update_frequency=2))
  loaded = _save_and_stock_load(model, str(tmp_path / "m.h5"))
  schedule = tfmot_rigl.sparse_wrappers(loaded)[0].pruning_schedule
  assert isinstance(schedule, tfmot.sparsity.keras.PolynomialDecay) and schedule.end_step.fraction == 0.75
  _compile(loaded, "sgd")
  _fit(loaded, epochs=2)  # TFMOT's wrapper has no callback here: the compiled optimizer is wrapped by the first step
  assert (schedule.begin_step, schedule.end_step) == (0, 12)
  assert 1 - np.mean(_masks(loaded)[0]) == pytest.approx(schedule.final_sparsity, abs=0.01)


def test_tfmot_guide_checkpoint_and_model_size_snippets_run_with_only_the_prune_call_changed():
  # TFMOT's comprehensive pruning guide, "Checkpoint and deserialize" and "see compression benefits", as written.
  input_shape = [20]
  x_train = np.random.randn(1, 20).astype(np.float32)
  y_train = keras.utils.to_categorical(np.random.randn(1), num_classes=20)

  def setup_model():
    model = keras.Sequential([
        keras.layers.Dense(20, input_shape=input_shape),
        keras.layers.Flatten()
    ])
    return model

  def get_gzipped_model_size(model):
    # Returns size of gzipped model, in bytes.
    import os
    import zipfile

    _, keras_file = tempfile.mkstemp('.h5')
    model.save(keras_file, include_optimizer=False)

    _, zipped_file = tempfile.mkstemp('.zip')
    with zipfile.ZipFile(zipped_file, 'w', compression=zipfile.ZIP_DEFLATED) as f:
      f.write(keras_file)

    return os.path.getsize(zipped_file)

  base_model = setup_model()
  model_for_pruning = tfmot_rigl.prune_sparse(base_model)  # the one changed line (was prune_low_magnitude)

  _, keras_model_file = tempfile.mkstemp('.h5')

  # Checkpoint: saving the optimizer is necessary (include_optimizer=True is the default).
  model_for_pruning.save(keras_model_file, include_optimizer=True)

  # Deserialize model.
  with tfmot.sparsity.keras.prune_scope():
    loaded_model = keras.models.load_model(keras_model_file)

  loaded_model.summary()

  model_for_export = tfmot.sparsity.keras.strip_pruning(model_for_pruning)
  unstripped, stripped = get_gzipped_model_size(model_for_pruning), get_gzipped_model_size(model_for_export)
  assert stripped < unstripped  # masks and schedule state are gone from the stripped file
  np.testing.assert_array_equal(_masks(loaded_model)[0], _masks(model_for_pruning)[0])
  os.remove(keras_model_file)
  del x_train, y_train


def test_custom_loops_say_which_call_is_missing():
  x, y = (tf.constant(v[:8]) for v in _data())
  loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

  def loop(model, optimizer, training):
    @tf.function
    def step():
      with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True) if training else model(x))
      optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
    step()

  for training in (True, False):  # a plain optimizer, with and without training=True: never silently trained
    model = _sparse_model()
    with pytest.raises(ValueError, match=r"no optimizer drives its sparse training: pass the optimizer through "
                       r"tfmot_rigl.wrap_optimizer.*also a fraction of training \(end_step=0.75\): pass total_steps"):
      loop(model, keras.optimizers.SGD(0.1), training)
  model = _sparse_model()
  with pytest.raises(ValueError, match=r"end_step=0.75 is a fraction of training.*pass total_steps"):
    loop(model, tfmot_rigl.wrap_optimizer(keras.optimizers.SGD(0.1), model), False)
  model = _sparse_model(tfmot_rigl.Magnitude(end_step=8))
  with pytest.raises(ValueError, match=r"\(Magnitude\).*no optimizer drives its sparse training"):
    loop(model, keras.optimizers.SGD(0.1), True)
  strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
  with strategy.scope():
    model = _sparse_model(tfmot_rigl.RigL(end_step=8))
    optimizer = keras.optimizers.SGD(0.1)

  @tf.function
  def distributed_step():
    def step():
      with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x))
      optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
    strategy.run(step)

  with pytest.raises(ValueError, match=r"no optimizer drives its sparse training"):
    distributed_step()
  # Gradients that do not train (inference under a tape with the model's outputs only, SNIP's scoring) pass.
  model = _sparse_model(tfmot_rigl.RigL(end_step=8))
  with tf.GradientTape() as tape:
    tape.watch(x)
    outputs = model(x, training=False)
  assert tape.gradient(outputs, x).shape == x.shape


def test_load_model_on_a_training_model_dir_says_what_it_is(tmp_path):
  (tmp_path / "params.yaml").write_text("task: {}\n")
  (tmp_path / "checkpoint").write_text('model_checkpoint_path: "ckpt-10"\n')
  with pytest.raises(ValueError, match=r"is a training model_dir .*tfm export"):
    tfmot_rigl.load_model(str(tmp_path))
