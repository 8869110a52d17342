"""Save -> load -> continue sparse training, in every tf_keras format, with TFMOT's prune_scope or no scope."""
import numpy as np
import pytest
import tf_keras as keras
import tensorflow_model_optimization as tfmot

import tfmot_rigl


def _data():
  x = np.random.RandomState(0).randn(64, 8).astype("float32")
  return x, (x[:, 0] > 0).astype("int32")


def _trained_sparse_model():
  keras.utils.set_random_seed(0)
  dense = keras.Sequential([keras.layers.Dense(16, activation="relu", input_shape=(8,)), keras.layers.Dense(2)])
  model = tfmot_rigl.prune_sparse(dense, algorithm=tfmot_rigl.RigL(update_frequency=2), sparsity=0.8)
  model.compile(tfmot_rigl.wrap_optimizer(keras.optimizers.SGD(0.1, momentum=0.9), model),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  x, y = _data()
  model.fit(x, y, batch_size=8, epochs=3, verbose=0)  # window resolved by fit: steps 0..18 of 24
  return model


def _masks(model):
  return [w.pruning_vars[0][1].numpy().copy() for w in tfmot_rigl.sparse_wrappers(model)]


@pytest.mark.parametrize("path", ["model.keras", "model.h5", "saved_model"])
@pytest.mark.parametrize("load", ["keras_under_prune_scope", "tfmot_rigl_load_model"])
def test_save_load_continue_sparse_training(tmp_path, path, load):
  model = _trained_sparse_model()
  path = str(tmp_path / path)
  model.save(path, save_format="tf" if path.endswith("saved_model") else None)
  if load == "keras_under_prune_scope":  # TFMOT's guide, plus the one call that reconnects masks and optimizer
    with tfmot.sparsity.keras.prune_scope():
      loaded = keras.models.load_model(path)
    tfmot_rigl.wrap_optimizer(loaded.optimizer, loaded)
  else:
    loaded = tfmot_rigl.load_model(path)
  wrappers = tfmot_rigl.sparse_wrappers(loaded)
  assert [type(w) for w in wrappers] == [tfmot_rigl.SparseWrapper] * 2
  masks = _masks(loaded)
  for before, after in zip(_masks(model), masks):
    np.testing.assert_array_equal(before, after)
  assert [(w.pruning_schedule.begin_step, w.pruning_schedule.end_step) for w in wrappers] == [(0, 18)] * 2
  if load == "tfmot_rigl_load_model" or not path.endswith("saved_model"):
    assert int(loaded.optimizer.iterations.numpy()) == 24  # the update schedule continues at step 24
  loaded.optimizer.iterations.assign(0)  # train through the update window again: masks must move
  x, y = _data()
  loaded.fit(x, y, batch_size=8, epochs=1, verbose=0)
  assert any(not np.array_equal(a, b) for a, b in zip(masks, _masks(loaded)))
  for wrapper in wrappers:
    kernel, mask, _ = wrapper.pruning_vars[0]
    assert np.all(kernel.numpy()[mask.numpy() == 0] == 0)


def test_plain_load_then_fit_says_how_to_reconnect_the_optimizer(tmp_path):
  model = _trained_sparse_model()
  path = str(tmp_path / "model.keras")
  model.save(path)
  loaded = keras.models.load_model(path)  # the optimizer comes back as a plain SGD
  x, y = _data()
  with pytest.raises(ValueError, match="tfmot_rigl.load_model"):
    loaded.fit(x, y, batch_size=8, epochs=1, verbose=0)
