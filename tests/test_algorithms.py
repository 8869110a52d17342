"""SNFS, SNIP, magnitude pruning, grow_init options and config round trips (REFERENCE.md; issue: remaining knobs)."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
import tensorflow_model_optimization as tfmot

import tfmot_rigl
from tfmot_rigl import algorithms


def _model(n_in=20, n_hidden=30, n_out=4, seed=0):
  keras.utils.set_random_seed(seed)
  inputs = keras.Input((n_in,))
  hidden = keras.layers.Dense(n_hidden, activation="relu", name="hidden")(inputs)
  return keras.Model(inputs, keras.layers.Dense(n_out, name="logits")(hidden))


def _data(n=64, n_in=20):
  rng = np.random.RandomState(0)
  return rng.rand(n, n_in).astype("float32"), rng.randint(0, 4, n)


def _single_layer(algorithm, optimizer=None, shape=(40, 50), sparsity=0.5):
  keras.utils.set_random_seed(0)
  inputs = keras.Input((shape[0],))
  model = keras.Model(inputs, keras.layers.Dense(shape[1], use_bias=False, name="fc")(inputs))
  model = tfmot_rigl.prune_sparse(model, algorithm, sparsity=sparsity, distribution="uniform",
                                  first_layer_dense=False)
  optimizer = tfmot_rigl.wrap_optimizer(optimizer or keras.optimizers.SGD(0.0), model)
  wrapper = tfmot_rigl.sparse_wrappers(model)[0]
  return optimizer, wrapper, wrapper.pruning_vars[0][0], wrapper.pruning_vars[0][1]


def _at_step(step, **kwargs):
  return dict(begin_step=step, end_step=step, update_frequency=1, drop_fraction_anneal="constant", **kwargs)


# --- SNFS --------------------------------------------------------------------------------------------------------
def test_snfs_ema_equals_hand_computed_over_three_steps():
  optimizer, wrapper, kernel, _ = _single_layer(tfmot_rigl.SNFS(momentum=0.9, **_at_step(100)), shape=(3, 2))
  grads = [np.random.RandomState(i).randn(3, 2).astype("float32") for i in range(3)]
  ema = np.zeros((3, 2), "float32")
  for grad in grads:
    optimizer.apply_gradients([(tf.constant(grad), kernel)])
    ema = 0.9 * ema + 0.1 * grad
  np.testing.assert_allclose(wrapper.state[0]["grad_ema"].numpy(), ema, rtol=1e-6)


def test_snfs_grows_where_the_ema_is_largest_not_the_last_gradient():
  optimizer, wrapper, kernel, mask = _single_layer(tfmot_rigl.SNFS(momentum=0.9, drop_fraction=0.2, **_at_step(1)),
                                                   shape=(10, 10))
  rng = np.random.RandomState(3)
  history = np.abs(rng.randn(10, 10)).astype("float32")
  optimizer.apply_gradients([(tf.constant(history), kernel)])     # step 0: EMA = 0.1 · history
  last = np.abs(rng.randn(10, 10)).astype("float32") * 0.01       # step 1: a small, differently ordered gradient
  kernel.assign(np.abs(rng.randn(10, 10)).astype("float32") * mask.numpy() + mask.numpy())
  before = mask.numpy().copy()
  weights = kernel.numpy().copy()
  optimizer.apply_gradients([(tf.constant(last), kernel)])
  ema = 0.9 * 0.1 * history + 0.1 * last
  n = int(before.sum())
  k = int(np.floor(0.2 * n))
  active = np.flatnonzero(before)
  kept = set(active[np.argsort(-weights.ravel()[active])][:n - k])
  rest = np.array(sorted(set(range(100)) - kept))
  grown = set(rest[np.argsort(-ema.ravel()[rest])][:k])
  assert set(np.flatnonzero(mask.numpy())) == kept | grown


# --- SNIP --------------------------------------------------------------------------------------------------------
def _hand_snip_masks(dense, x, y, sparsities):
  loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  kernels = {name: dense.get_layer(name).kernel for name in sparsities}
  with tf.GradientTape() as tape:
    loss = loss_fn(y, dense(x, training=True))
  grads = dict(zip(kernels, tape.gradient(loss, list(kernels.values()))))
  masks = {}
  for name, kernel in kernels.items():
    score = np.abs(grads[name].numpy() * kernel.numpy()).ravel()
    keep = score.size - int(np.floor(sparsities[name] * score.size))
    mask = np.zeros(score.size)
    mask[np.argsort(-score, kind="stable")[:keep]] = 1
    masks[name] = mask.reshape(kernel.shape)
  return masks


def test_snip_masks_are_top_gw_per_layer_with_distribution_counts_and_never_change():
  x, y = _data()
  dense = _model()
  sparsities = tfmot_rigl.model_sparsities(dense, 0.8, "erk")
  expected = _hand_snip_masks(dense, x[:16], y[:16], sparsities)
  model = tfmot_rigl.prune_sparse(_model(), tfmot_rigl.SNIP(), sparsity=0.8, distribution="erk")
  assert all(np.all(w.pruning_vars[0][1].numpy() == 1) for w in tfmot_rigl.sparse_wrappers(model))  # dense before
  model.compile(tfmot_rigl.wrap_optimizer(keras.optimizers.SGD(0.1, momentum=0.9), model),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  model.fit(x[:16], y[:16], batch_size=16, epochs=1, verbose=0, shuffle=False)   # step 0 on exactly that batch
  after_first = {w.layer.name: w.pruning_vars[0][1].numpy().copy() for w in tfmot_rigl.sparse_wrappers(model)}
  for name, mask in expected.items():
    np.testing.assert_array_equal(after_first[name], mask)
  model.fit(x, y, batch_size=8, epochs=2, verbose=0)
  for wrapper in tfmot_rigl.sparse_wrappers(model):
    np.testing.assert_array_equal(wrapper.pruning_vars[0][1].numpy(), after_first[wrapper.layer.name])
    assert np.all(wrapper.pruning_vars[0][0].numpy()[after_first[wrapper.layer.name] == 0] == 0)


def test_apply_snip_averages_given_batches_and_training_keeps_them():
  x, y = _data()
  model = tfmot_rigl.prune_sparse(_model(), tfmot_rigl.SNIP(), sparsity=0.8, distribution="erk")
  loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
  tfmot_rigl.apply_snip(model, dataset, loss_fn, num_batches=2)
  masks = {w.layer.name: w.pruning_vars[0][1].numpy().copy() for w in tfmot_rigl.sparse_wrappers(model)}
  for wrapper in tfmot_rigl.sparse_wrappers(model):
    kernel = wrapper.pruning_vars[0][0]
    expected_nnz = kernel.shape.num_elements() - int(np.floor(wrapper.pruning_schedule.sparsity *
                                                              kernel.shape.num_elements()))
    assert masks[wrapper.layer.name].sum() == expected_nnz
  model.compile(tfmot_rigl.wrap_optimizer(keras.optimizers.SGD(0.1), model), loss_fn)
  model.fit(x, y, batch_size=16, epochs=1, verbose=0)
  for wrapper in tfmot_rigl.sparse_wrappers(model):
    np.testing.assert_array_equal(wrapper.pruning_vars[0][1].numpy(), masks[wrapper.layer.name])


def test_snip_without_a_batch_source_says_how_to_give_one():
  model = tfmot_rigl.prune_sparse(_model(), tfmot_rigl.SNIP(), sparsity=0.8)
  with pytest.raises(ValueError, match=r"SNIP needs a batch source: pass apply_snip\(model, \(x, y\)"):
    tfmot_rigl.apply_snip(model, None, keras.losses.MeanSquaredError())


# --- magnitude pruning (TFMOT's own) -----------------------------------------------------------------------------
def test_magnitude_matches_tfmot_used_directly_and_reaches_target_at_end_step():
  x, y = _data()
  loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  ours = tfmot_rigl.prune_sparse(_model(), tfmot_rigl.Magnitude(begin_step=0, end_step=16, update_frequency=4),
                                 sparsity=0.75, distribution="uniform", first_layer_dense=False)
  ours.compile(tfmot_rigl.wrap_optimizer(keras.optimizers.SGD(0.1, momentum=0.9), ours), loss_fn)
  ours.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False)   # 32 steps

  schedule = tfmot.sparsity.keras.PolynomialDecay(0.0, 0.75, begin_step=0, end_step=16, power=3, frequency=4)
  direct = tfmot.sparsity.keras.prune_low_magnitude(_model(), pruning_schedule=schedule)
  direct.compile(keras.optimizers.SGD(0.1, momentum=0.9), loss_fn)
  direct.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False,
             callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])

  for a, b in zip(tfmot_rigl.sparse_wrappers(ours), tfmot_rigl.sparse_wrappers(direct)):
    assert type(a) is type(b)  # TFMOT's own PruneLowMagnitude, not ours
    np.testing.assert_array_equal(a.pruning_vars[0][1].numpy(), b.pruning_vars[0][1].numpy())
    np.testing.assert_allclose(1 - a.pruning_vars[0][1].numpy().mean(), 0.75, atol=1e-3)


# --- grow_init and optimizer-slot options -------------------------------------------------------------------------
def _grow(grow_init, algorithm_cls=tfmot_rigl.RigL, **kwargs):
  optimizer, wrapper, kernel, mask = _single_layer(
      algorithm_cls(grow_init=grow_init, drop_fraction=0.5, **_at_step(0), **kwargs), shape=(40, 50))
  rng = np.random.RandomState(0)
  kernel.assign(rng.randn(*kernel.shape).astype("float32") * mask.numpy())
  before_kernel, before_mask = kernel.numpy().copy(), mask.numpy().copy()
  initial = wrapper.initial_weights[0].numpy().copy() if wrapper.initial_weights else None
  grad = rng.randn(*kernel.shape).astype("float32")
  optimizer.apply_gradients([(tf.constant(grad), kernel)])
  after_mask = mask.numpy()
  new = (after_mask > 0) & (before_mask == 0)
  kept = (after_mask > 0) & (before_mask > 0)
  assert new.sum() > 100
  np.testing.assert_array_equal(kernel.numpy()[kept], before_kernel[kept])  # only new connections change
  active = before_kernel[before_mask > 0]
  return kernel.numpy()[new], grad[new], active, initial, optimizer


def test_grow_init_zeros():
  values, *_ = _grow("zeros")
  np.testing.assert_array_equal(values, 0.0)


@pytest.mark.parametrize("divisor", [1, 2])
def test_grow_init_random_normal_scaled_to_active_weights(divisor):
  values, _, active, _, _ = _grow("random_normal" if divisor == 1 else f"random_normal_{divisor}")
  assert np.all(values != 0)
  assert abs(values.mean()) < 0.15 * active.std() / divisor
  np.testing.assert_allclose(values.std(), active.std() / divisor, rtol=0.1)


def test_grow_init_random_uniform_within_mean_abs_weight():
  values, _, active, _, _ = _grow("random_uniform_2")
  bound = np.abs(active).mean() / 2
  assert np.all(np.abs(values) <= bound + 1e-6)
  assert values.max() > 0.8 * bound and values.min() < -0.8 * bound


def test_grow_init_initial_dist_draws_from_initial_weights():
  values, _, _, initial, _ = _grow("initial_dist")
  assert np.all(np.isin(values, initial.ravel()))
  assert len(np.unique(values)) > 0.9 * len(values)


def test_rigl_grow_init_grad_scale_and_grad_sign():
  values, grad, *_ = _grow("grad_scale_10")
  np.testing.assert_allclose(values, grad / 10, rtol=1e-6)
  values, grad, *_ = _grow("grad_sign")
  np.testing.assert_array_equal(values, np.sign(grad))


def test_rigl_initial_acc_scale_sets_adam_first_moment_to_scaled_gradient():
  # Adam's m is an average of g: a new connection's m starts at initial_acc_scale · g, its v at zero.
  optimizer, wrapper, kernel, mask = _single_layer(
      tfmot_rigl.RigL(initial_acc_scale=0.5, drop_fraction=0.5, **_at_step(0)), keras.optimizers.Adam(0.0),
      shape=(10, 10))
  before = mask.numpy().copy()
  grad = np.random.RandomState(1).randn(10, 10).astype("float32")
  optimizer.apply_gradients([(tf.constant(grad), kernel)])
  new = (mask.numpy() > 0) & (before == 0)
  np.testing.assert_allclose(optimizer._momentums[0].numpy()[new], 0.5 * grad[new], rtol=1e-6)
  assert not optimizer._velocities[0].numpy()[new].any()


def test_unknown_grow_init_lists_valid_ones():
  with pytest.raises(ValueError, match="Unknown grow_init 'ones'.*zeros, random_normal, random_uniform, initial_dist"):
    tfmot_rigl.SET(grow_init="ones")
  with pytest.raises(ValueError, match="grad_scale, grad_sign"):
    tfmot_rigl.RigL(grow_init="ones")
  with pytest.raises(ValueError, match="Unknown grow_init 'grad_sign'"):
    tfmot_rigl.SET(grow_init="grad_sign")   # gradient-based init is RigL's alone


def test_unknown_anneal_lists_valid_ones():
  with pytest.raises(ValueError, match="constant, cosine or exponential_k"):
    tfmot_rigl.RigL(drop_fraction_anneal="linear")


# --- every method, one API ----------------------------------------------------------------------------------------
METHODS = ["dense", "static", "set", "rigl", "snfs", "snip", "magnitude"]


@pytest.mark.parametrize("method", METHODS)
def test_every_method_config_round_trips(method):
  algorithm = tfmot_rigl.make_algorithm(method, update_frequency=7, begin_step=0.1, end_step=0.5, drop_fraction=0.2,
                                        drop_fraction_anneal="exponential_2", seed_offset=3)
  restored = algorithms.deserialize(algorithms.serialize(algorithm))
  assert restored == algorithm and type(restored) is type(algorithm)
  assert type(algorithm).from_config(algorithm.get_config()) == algorithm


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_in_fit_and_in_a_custom_loop(method):
  x, y = _data()
  loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
  knobs = dict(update_frequency=2, end_step=6)
  for loop in ("fit", "custom"):
    model = tfmot_rigl.prune_sparse(_model(), tfmot_rigl.make_algorithm(method, **knobs), sparsity=0.8)
    optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
    if tfmot_rigl.sparse_wrappers(model):
      optimizer = tfmot_rigl.wrap_optimizer(optimizer, model)
    if loop == "fit":
      model.compile(optimizer, loss_fn)
      history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
      assert np.isfinite(history.history["loss"][-1])
    else:
      @tf.function
      def step(xb, yb):
        with tf.GradientTape() as tape:
          loss = loss_fn(yb, model(xb, training=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss
      for i in range(0, 64, 8):
        assert np.isfinite(step(x[i:i + 8], y[i:i + 8]).numpy())
    if method != "dense":
      masks = [w.pruning_vars[0][1].numpy() for w in tfmot_rigl.sparse_wrappers(model)]
      if method != "magnitude":   # magnitude is still ramping up at step 8
        total = sum(m.size for m in masks)
        assert abs(sum(m.size - m.sum() for m in masks) / total - 0.8) < 0.01


def test_layer_with_several_prunable_weights_gets_one_sparsity_per_weight():
  class Block(keras.layers.Layer, tfmot.sparsity.keras.PrunableLayer):
    def build(self, input_shape):
      self.a = self.add_weight("a", (input_shape[-1], 64))
      self.b = self.add_weight("b", (64, 8))

    def call(self, x):
      return tf.matmul(tf.nn.relu(tf.matmul(x, self.a)), self.b)

    def get_prunable_weights(self):
      return [self.a, self.b]

  inputs = keras.Input((32,))
  model = keras.Model(inputs, keras.layers.Dense(4, name="head")(Block(name="block")(inputs)))
  sparsities = tfmot_rigl.model_sparsities(model, 0.9, "erk")
  assert set(sparsities) == {"block/a", "block/b", "head"}
  assert sparsities["block/a"] != sparsities["block/b"]
  sparse = tfmot_rigl.prune_sparse(model, tfmot_rigl.Static(), sparsity=0.9, distribution="erk")
  block = [w for w in tfmot_rigl.sparse_wrappers(sparse) if w.layer.name == "block"][0]
  for (kernel, mask, _), key in zip(block.pruning_vars, ["block/a", "block/b"]):
    size = kernel.shape.num_elements()
    assert mask.numpy().sum() == size - int(np.floor(sparsities[key] * size))
  custom = tfmot_rigl.model_sparsities(model, 0.9, "erk", custom_sparsities={"block": 0.5})
  assert custom["block/a"] == custom["block/b"] == 0.5
