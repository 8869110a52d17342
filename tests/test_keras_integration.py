"""prune_sparse + wrap_optimizer as users drive them: fit, custom loops, XLA, replicas, strip, save and restore."""

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
import tensorflow_model_optimization as tfmot

import tfmot_rigl


def _mlp(seed=0):
  keras.utils.set_random_seed(seed)
  inputs = keras.Input((12,))
  hidden = keras.layers.Dense(24, activation="relu", name="hidden")(inputs)
  return keras.Model(inputs, keras.layers.Dense(4, name="logits")(hidden))


def _data(n=64):
  rng = np.random.RandomState(0)
  return rng.rand(n, 12).astype("float32"), rng.randint(0, 4, n)


def _masks(model):
  return {w.layer.name: w.pruning_vars[0][1].numpy().copy() for w in tfmot_rigl.sparse_wrappers(model)}


def _rigl(**kwargs):
  return tfmot_rigl.RigL(**dict(dict(update_frequency=2, begin_step=0, end_step=12, drop_fraction=0.5), **kwargs))


def _compiled(algorithm=None, optimizer=None, seed=0, jit_compile=False, sparsity=0.8):
  model = tfmot_rigl.prune_sparse(_mlp(seed), algorithm or _rigl(), sparsity=sparsity, distribution="erk", seed=seed)
  optimizer = tfmot_rigl.wrap_optimizer(optimizer or keras.optimizers.SGD(0.05, momentum=0.9), model)
  model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"],
                jit_compile=jit_compile)
  return model


def _assert_masks_consistent(model):
  for wrapper in tfmot_rigl.sparse_wrappers(model):
    kernel, mask, _ = wrapper.pruning_vars[0]
    expected = kernel.shape.num_elements() - int(np.floor(wrapper.pruning_schedule.sparsity *
                                                          kernel.shape.num_elements()))
    assert int(mask.numpy().sum()) == expected
    assert np.all(kernel.numpy()[mask.numpy() == 0] == 0.0)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_fit_updates_masks_and_keeps_exact_nnz(jit_compile):
  model = _compiled(jit_compile=jit_compile)
  before = _masks(model)
  x, y = _data()
  model.fit(x, y, batch_size=8, epochs=1, verbose=0)
  after = _masks(model)
  assert any(not np.array_equal(before[n], after[n]) for n in before)
  _assert_masks_consistent(model)


def test_custom_tf_function_loop_matches_fit():
  x, y = _data()
  fit_model = _compiled()
  fit_model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)

  model = tfmot_rigl.prune_sparse(_mlp(), _rigl(), sparsity=0.8, distribution="erk")
  optimizer = tfmot_rigl.wrap_optimizer(keras.optimizers.SGD(0.05, momentum=0.9), model)
  loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

  @tf.function
  def train_step(xb, yb):
    with tf.GradientTape() as tape:
      loss = loss_fn(yb, model(xb, training=True))
    optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))

  for i in range(0, 64, 8):
    train_step(x[i:i + 8], y[i:i + 8])
  for name, mask in _masks(fit_model).items():
    np.testing.assert_array_equal(mask, _masks(model)[name])
  np.testing.assert_allclose(fit_model.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


def test_two_replica_mirrored_strategy_matches_single_device():
  x, y = _data()
  devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
  assert len(devices) == 2, "conftest configures two logical CPUs"
  # ReductionToOneDevice: collective all-reduce keys would clash with other two-replica tests in this process.
  strategy = tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
  with strategy.scope():
    mirrored = _compiled(tfmot_rigl.RigL(update_frequency=2, end_step=12, drop_fraction=0.5),
                         keras.optimizers.Adam(0.01))
  mirrored.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
  single = _compiled(tfmot_rigl.RigL(update_frequency=2, end_step=12, drop_fraction=0.5), keras.optimizers.Adam(0.01))
  single.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False)
  initial = _masks(_compiled())
  for m_wrapper, s_wrapper in zip(tfmot_rigl.sparse_wrappers(mirrored), tfmot_rigl.sparse_wrappers(single)):
    mask = m_wrapper.pruning_vars[0][1]
    replicas = [v.numpy() for v in mask.values]
    assert len(replicas) == 2
    np.testing.assert_array_equal(replicas[0], replicas[1])
    np.testing.assert_array_equal(replicas[0], s_wrapper.pruning_vars[0][1].numpy())
  assert any(not np.array_equal(initial[n], m) for n, m in _masks(single).items())


def test_loss_scale_optimizer_for_mixed_precision_is_supported():
  model = _compiled(optimizer=keras.mixed_precision.LossScaleOptimizer(keras.optimizers.SGD(0.05, momentum=0.9)))
  before = _masks(model)
  x, y = _data()
  model.fit(x, y, batch_size=8, epochs=1, verbose=0)
  assert any(not np.array_equal(before[n], m) for n, m in _masks(model).items())
  _assert_masks_consistent(model)


def test_strip_gives_plain_layers_with_zero_pattern_of_final_mask():
  model = _compiled()
  x, y = _data()
  model.fit(x, y, batch_size=8, epochs=1, verbose=0)
  masks = _masks(model)
  outputs = model.predict(x, verbose=0)
  for stripped in (tfmot_rigl.strip_sparse(model), tfmot.sparsity.keras.strip_pruning(model)):
    assert not tfmot_rigl.sparse_wrappers(stripped)
    for name, mask in masks.items():
      kernel = stripped.get_layer(name).kernel.numpy()
      np.testing.assert_array_equal(kernel != 0, mask > 0)
    np.testing.assert_allclose(stripped.predict(x, verbose=0), outputs, atol=1e-6)


def test_checkpoint_restores_masks_and_state(tmp_path):
  model = _compiled(tfmot_rigl.SNFS(update_frequency=2, end_step=12, drop_fraction=0.5))
  x, y = _data()
  model.fit(x, y, batch_size=8, epochs=1, verbose=0)
  path = tf.train.Checkpoint(model=model, optimizer=model.optimizer).save(str(tmp_path / "ckpt"))
  masks = _masks(model)
  emas = [w.state[0]["grad_ema"].numpy() for w in tfmot_rigl.sparse_wrappers(model)]
  assert all(np.abs(e).sum() > 0 for e in emas)

  fresh = _compiled(tfmot_rigl.SNFS(update_frequency=2, end_step=12, drop_fraction=0.5), seed=1)
  tf.train.Checkpoint(model=fresh, optimizer=fresh.optimizer).restore(path).expect_partial()
  for name, mask in masks.items():
    np.testing.assert_array_equal(_masks(fresh)[name], mask)
  for wrapper, ema in zip(tfmot_rigl.sparse_wrappers(fresh), emas):
    np.testing.assert_array_equal(wrapper.state[0]["grad_ema"].numpy(), ema)


@pytest.mark.parametrize("suffix", ["h5", "tf"])
def test_keras_save_and_load_keeps_masks_and_schedule(tmp_path, suffix):
  model = _compiled()
  x, y = _data()
  model.fit(x, y, batch_size=8, epochs=1, verbose=0)
  path = str(tmp_path / f"model.{suffix}") if suffix == "h5" else str(tmp_path / "saved")
  model.save(path, include_optimizer=False)
  loaded = keras.models.load_model(path, compile=False)
  for original, restored in zip(tfmot_rigl.sparse_wrappers(model), tfmot_rigl.sparse_wrappers(loaded)):
    assert isinstance(restored, tfmot_rigl.SparseWrapper)
    assert restored.pruning_schedule == original.pruning_schedule
    assert restored.algorithm == original.algorithm
    np.testing.assert_array_equal(restored.pruning_vars[0][1].numpy(), original.pruning_vars[0][1].numpy())
  np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_works_on_sequential_nested_and_many_layer_kinds():
  class Prunable(keras.layers.Dense, tfmot.sparsity.keras.PrunableLayer):
    def get_prunable_weights(self):
      return [self.kernel]

  inner = keras.Sequential([keras.layers.Conv2D(4, 3, padding="same", input_shape=(8, 8, 3), name="c2d"),
                            keras.layers.DepthwiseConv2D(3, padding="same", name="dw"),
                            keras.layers.SeparableConv2D(6, 3, padding="same", name="sep")], name="inner")
  inputs = keras.Input((8, 8, 3))
  x = keras.layers.GlobalAveragePooling2D()(inner(inputs))
  x = keras.layers.Reshape((6, 1))(x)
  x = keras.layers.Conv1D(3, 2, name="c1d")(x)
  x = keras.layers.Flatten()(x)
  outputs = Prunable(2, name="custom")(x)
  model = keras.Model(inputs, outputs)
  plain = tfmot_rigl.prune_sparse(model, tfmot_rigl.Static(), sparsity=0.5, distribution="uniform",
                                  first_layer_dense=False)
  assert {w.layer.name for w in tfmot_rigl.sparse_wrappers(plain)} == {"c2d", "sep", "c1d", "custom"}
  with_dw = tfmot_rigl.prune_sparse(model, tfmot_rigl.Static(), sparsity=0.5, distribution="uniform",
                                    first_layer_dense=False, sparsify_depthwise=True)
  names = {w.layer.name for w in tfmot_rigl.sparse_wrappers(with_dw)}
  assert names == {"c2d", "dw", "sep", "c1d", "custom"}
  dw = [w for w in tfmot_rigl.sparse_wrappers(with_dw) if w.layer.name == "dw"][0]
  assert dw.pruning_vars[0][0].shape == (3, 3, 4, 1)
  assert int(dw.pruning_vars[0][1].numpy().sum()) == 36 - 18

  conv3d = keras.Sequential([keras.layers.Conv3D(2, 2, input_shape=(4, 4, 4, 1), name="c3d"),
                             keras.layers.Flatten(), keras.layers.Dense(2, name="out")])
  sparse3d = tfmot_rigl.prune_sparse(conv3d, tfmot_rigl.Static(), sparsity=0.5, distribution="erk")
  assert isinstance(sparse3d, keras.Sequential)
  assert {w.layer.name for w in tfmot_rigl.sparse_wrappers(sparse3d)} == {"c3d", "out"}
  out = sparse3d(np.zeros((1, 4, 4, 4, 1), "float32"))
  assert out.shape == (1, 2)


def test_fractional_end_step_resolves_with_total_steps():
  model = tfmot_rigl.prune_sparse(_mlp(), tfmot_rigl.RigL(begin_step=0.1, end_step=0.75), sparsity=0.8,
                                  total_steps=1000)
  schedule = tfmot_rigl.sparse_wrappers(model)[0].pruning_schedule
  assert (schedule.begin_step, schedule.end_step) == (100, 750)


def test_clear_errors():
  with pytest.raises(ValueError, match=r"sparsity=1.2 is outside \[0, 1\)"):
    tfmot_rigl.prune_sparse(_mlp(), tfmot_rigl.Static(), sparsity=1.2)
  with pytest.raises(ValueError, match="Unknown distribution 'erd'"):
    tfmot_rigl.prune_sparse(_mlp(), tfmot_rigl.Static(), distribution="erd")
  with pytest.raises(ValueError, match="Unknown sparse training method 'rigel'.*rigl"):
    tfmot_rigl.prune_sparse(_mlp(), "rigel")
  with pytest.raises(ValueError, match="Unknown sparse training method"):
    tfmot_rigl.make_algorithm("rigel")
  no_kernels = keras.Sequential([keras.layers.ReLU(input_shape=(3,))])
  with pytest.raises(ValueError, match="no sparsifiable layer"):
    tfmot_rigl.prune_sparse(no_kernels, tfmot_rigl.Static())
  with pytest.raises(ValueError, match="update_frequency=0 must be a positive"):
    tfmot_rigl.RigL(update_frequency=0)
  with pytest.raises(ValueError, match="end_step=10 is before begin_step=20"):
    tfmot_rigl.prune_sparse(_mlp(), tfmot_rigl.RigL(begin_step=20, end_step=10))
  model = tfmot_rigl.prune_sparse(_mlp(), tfmot_rigl.Static())
  with pytest.raises(ValueError, match="Cannot reset the slots of optimizer .*tf_keras optimizer"):
    tfmot_rigl.wrap_optimizer(tf.Module(), model)
  with pytest.raises(ValueError, match="no sparse layers; call tfmot_rigl.prune_sparse"):
    tfmot_rigl.wrap_optimizer(keras.optimizers.SGD(), _mlp())
  with pytest.raises(ValueError, match="cannot drive sparse training with Adafactor: it keeps factored"):
    tfmot_rigl.wrap_optimizer(keras.optimizers.Adafactor(), tfmot_rigl.prune_sparse(_mlp(), _rigl()))


def test_tfmot_pruning_summaries_callback_logs_our_masks(tmp_path):
  model = _compiled()
  x, y = _data()
  model.fit(x, y, batch_size=8, epochs=2, verbose=0,
            callbacks=[tfmot.sparsity.keras.PruningSummaries(log_dir=str(tmp_path))])
  tags = set()
  for path in (tmp_path / "metrics").glob("events.out.tfevents*"):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      tags.update(value.tag for value in event.summary.value)
  assert any(tag.endswith("mask/sparsity") or "sparsity" in tag for tag in tags), tags
  assert len([t for t in tags if "sparsity" in t]) == len(tfmot_rigl.sparse_wrappers(model))
