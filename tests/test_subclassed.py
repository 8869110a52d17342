"""Subclassed tf_keras models (nested layers, lists of blocks): sparsify, train, strip in place, save, export."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import tfmot_rigl


class Block(keras.layers.Layer):
  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.conv = keras.layers.Conv2D(8, 3, padding="same", activation="relu")
    self.proj = keras.layers.Dense(8)

  def call(self, x):
    return self.proj(self.conv(x))


class Net(keras.Model):
  def __init__(self):
    super().__init__()
    self.stem = keras.layers.Conv2D(8, 3, activation="relu")
    self.blocks = [Block(), Block()]
    self.pool = keras.layers.GlobalAveragePooling2D()
    self.head = keras.layers.Dense(2)

  def call(self, x):
    x = self.stem(x)
    for block in self.blocks:
      x = block(x)
    return self.head(self.pool(x))


def _data():
  x = np.random.RandomState(0).randn(64, 6, 6, 1).astype("float32")
  return x, (x[:, 0, 0, 0] > 0).astype("int32")


def test_subclassed_model_trains_sparse_strips_and_exports(tmp_path):
  keras.utils.set_random_seed(0)
  x, y = _data()
  net = Net()
  net(x[:1])
  model = tfmot_rigl.prune_sparse(net, algorithm=tfmot_rigl.RigL(update_frequency=2), sparsity=0.8)
  assert model is net  # wrapped in place: a subclassed model cannot be cloned
  wrappers = tfmot_rigl.sparse_wrappers(model)
  assert len(wrappers) == 5 and isinstance(model.blocks[1].proj, tfmot_rigl.SparseWrapper)
  assert isinstance(model.stem, tfmot_rigl.SparseWrapper)
  model.compile(tfmot_rigl.wrap_optimizer(keras.optimizers.SGD(0.1), model),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  before = [w.pruning_vars[0][1].numpy().copy() for w in wrappers]
  model.fit(x, y, batch_size=8, epochs=2, verbose=0)
  after = [w.pruning_vars[0][1].numpy() for w in wrappers]
  assert all(not np.array_equal(a, b) for a, b in zip(after, before))  # masks moved in every layer
  nonzeros = sum(a.sum() for a in after)
  total = sum(a.size for a in after)
  assert 1 - nonzeros / total > 0.75
  prediction = model.predict(x[:4], verbose=0)

  plain = tfmot_rigl.strip_sparse(model)
  assert plain is model and not tfmot_rigl.sparse_wrappers(plain)
  assert type(plain.blocks[0].conv) is keras.layers.Conv2D
  assert np.mean(plain.blocks[0].conv.kernel.numpy() == 0) > 0.5
  np.testing.assert_allclose(plain.predict(x[:4], verbose=0), prediction, atol=1e-6)
  tf.saved_model.save(plain, str(tmp_path / "saved"))
  loaded = tf.saved_model.load(str(tmp_path / "saved"))
  served = list(loaded.signatures["serving_default"](tf.constant(x[:4])).values())[0]
  np.testing.assert_allclose(served.numpy(), prediction, atol=1e-5)
  tflite = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "saved")).convert()
  interpreter = tf.lite.Interpreter(model_content=tflite)
  runner = interpreter.get_signature_runner()
  out = list(runner(**{runner.get_input_details().popitem()[0]: x[:1]}).values())[0]
  np.testing.assert_allclose(out, prediction[:1], atol=1e-4)


def test_layers_held_only_in_tuples_are_named():
  class Hidden(keras.Model):
    def __init__(self):
      super().__init__()
      self.pair = (keras.layers.Dense(4), keras.layers.Dense(2))

    def call(self, x):
      return self.pair[1](self.pair[0](x))

  model = Hidden()
  model(np.zeros((1, 3), "float32"))
  with pytest.raises(ValueError, match=r"not held as attributes .* hold each layer as `self.name = layer`"):
    tfmot_rigl.prune_sparse(model, "static", sparsity=0.5)
