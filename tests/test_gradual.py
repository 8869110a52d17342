"""Gradual pruning of the dynamic methods (issue 19, GraNet-style): s(t) = s_f + (s_0 − s_f)(1 − p)³ per layer, exact
active counts at every step (block masks included), the prune-then-drop/grow update, compiled = uncompiled, and the
knob's errors."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import tfmot_rigl
from tfmot_rigl.core import gradual
from tfmot_rigl.core import masks as mask_math

STEPS, DT, PRUNE_END, END = 14, 2, 8, 12


def test_cubic_schedule_ends_exact_and_counts_never_grow():
  assert gradual.sparsity_at(0, 0.5, 0.98, 0, 100) == 0.5
  assert gradual.sparsity_at(100, 0.5, 0.98, 0, 100) == 0.98 == gradual.sparsity_at(500, 0.5, 0.98, 0, 100)
  # Hand-computed: p = 0.5 -> 0.98 + (0.5 − 0.98)·0.125 = 0.92.
  assert gradual.sparsity_at(50, 0.5, 0.98, 0, 100) == pytest.approx(0.92)
  assert gradual.sparsity_at(60, 0.5, 0.98, 20, 100) == pytest.approx(0.92)
  counts = gradual.active_counts(1000, 0.5, 0.98, 0, 100, 10)
  # floor of s·N in float64, as the initial masks count: 0.98 − 0.48·0.125 is 0.9199999…, so 919 zeros.
  assert counts[0] == 500 and counts[5] == 1000 - 919 and counts[-1] == 20 and len(counts) == 11
  assert all(a >= b for a, b in zip(counts, counts[1:]))
  assert gradual.count_after_update(counts, 10_000, 10) == 20
  with pytest.raises(ValueError, match="initial_sparsity"):
    gradual.check_initial_sparsity(1.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_prune_then_drop_and_grow_matches_the_sorting_reference(seed):
  rng = np.random.RandomState(seed)
  mask = tf.constant((rng.rand(200) < 0.6).astype(np.float32))
  drop = tf.constant(np.round(rng.rand(200), 1).astype(np.float32))  # many ties
  grow = tf.constant(np.round(rng.rand(200), 1).astype(np.float32))
  active = int(mask.numpy().sum())
  target = tf.constant(active - 37)
  fast = mask_math.drop_and_grow(mask, drop, grow, 0.3, tf.constant([seed, 5]), target)
  slow = mask_math.drop_and_grow_reference(mask, drop, grow, 0.3, tf.constant([seed, 5]), target)
  np.testing.assert_array_equal(fast[0], slow[0])
  np.testing.assert_array_equal(fast[1], slow[1])
  assert int(fast[0].numpy().sum()) == active - 37
  # With grow scores that never pick an active position, the survivors among the active are the kept largest |W|
  # (every one scores >= every active one that left) and exactly floor(0.3 · target) connections are new.
  grow = tf.where(mask > 0, -1.0, grow)
  new_mask, new = mask_math.drop_and_grow(mask, drop, grow, 0.3, tf.constant([seed, 5]), target)
  kept = np.logical_and(new_mask.numpy() > 0, mask.numpy() > 0)
  left = np.logical_and(new_mask.numpy() == 0, mask.numpy() > 0)
  assert drop.numpy()[kept].min() >= drop.numpy()[left].max()
  assert int(new.numpy().sum()) == int(0.3 * (active - 37)) and kept.sum() == active - 37 - int(0.3 * (active - 37))


def _model(seed=0):
  keras.utils.set_random_seed(seed)
  return keras.Sequential([keras.layers.Dense(24, activation="relu", input_shape=(16,), name="fc1"),
                           keras.layers.Dense(8, name="fc2"), keras.layers.Dense(4, name="logits")])


def _train(method, block_shape=(1, 1), jit=False, steps=STEPS, initial_acc_scale=0.0):
  """Trains a gradual model step by step; returns (model, [per-step {layer: active units}], final weights)."""
  algorithm = tfmot_rigl.make_algorithm(method, update_frequency=DT, end_step=END, initial_sparsity=0.5,
                                        prune_end=PRUNE_END, block_shape=block_shape, drop_fraction=0.5,
                                        drop_fraction_anneal="constant", initial_acc_scale=initial_acc_scale)
  model = tfmot_rigl.prune_sparse(_model(), algorithm, sparsity=0.9, seed=3, total_steps=steps)
  optimizer = tfmot_rigl.wrap_optimizer(keras.optimizers.SGD(0.1, momentum=0.9), model)
  data = np.random.RandomState(0)
  x = tf.constant(data.randn(steps, 32, 16).astype(np.float32))
  y = tf.constant(data.randint(0, 4, (steps, 32)))
  loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

  @tf.function(jit_compile=jit)
  def step(xb, yb):
    with tf.GradientTape() as tape:
      loss = loss_fn(yb, model(xb, training=True))
    optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))

  units = b_in = b_out = None
  history = []
  for t in range(steps):
    step(x[t], y[t])
    counts = {}
    for wrapper in tfmot_rigl.sparse_wrappers(model):
      (weight, mask, _), = wrapper.pruning_vars
      b_in, b_out = block_shape if wrapper.algorithm.in_blocks(mask.shape) else (1, 1)
      counts[wrapper.layer.name] = int(mask.numpy().sum()) // (b_in * b_out)
      # Inactive weights exactly zero at every step.
      assert not np.any(weight.numpy()[mask.numpy() == 0])
    history.append(counts)
  del units
  return model, history, [v.numpy() for v in model.weights]


def _expected(model, step):
  """{layer: active units after step `step`} from core.gradual, by hand from the wrappers' sparsities."""
  expected = {}
  for wrapper in tfmot_rigl.sparse_wrappers(model):
    units = wrapper.algorithm.mask_units(wrapper.pruning_vars[0][0].shape)
    counts = gradual.active_counts(units, wrapper.initial_sparsity_of(0), wrapper.sparsity_of(0), 0, PRUNE_END, DT)
    last_update = min(step, END) // DT * DT
    expected[wrapper.layer.name] = counts[min(last_update // DT, len(counts) - 1)]
  return expected


@pytest.mark.parametrize("method,block_shape", [("rigl", (1, 1)), ("set", (1, 1)), ("snfs", (1, 1)),
                                                ("rigl", (4, 2))])
def test_active_counts_follow_the_cubic_exactly_at_every_step(method, block_shape):
  model, history, _ = _train(method, block_shape)
  dense = tfmot_rigl.model_sparsities(_model(), 0.5)
  final = tfmot_rigl.model_sparsities(_model(), 0.9)
  for wrapper in tfmot_rigl.sparse_wrappers(model):
    name = wrapper.layer.name
    assert (wrapper.initial_sparsity_of(0), wrapper.sparsity_of(0)) == pytest.approx((dense[name], final[name]))
  for t, counts in enumerate(history):
    assert counts == _expected(model, t), f"step {t}"
  # The target is reached by prune_end and held; the start was the distribution at 0.5 (denser).
  assert history[PRUNE_END] == history[-1] and history[0] != history[-1]


def test_compiled_and_uncompiled_runs_are_identical():
  _, plain_history, plain = _train("rigl", jit=False, initial_acc_scale=1.0)
  _, xla_history, compiled = _train("rigl", jit=True, initial_acc_scale=1.0)
  assert plain_history == xla_history
  for a, b in zip(plain, compiled):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(a == 0, b == 0)


def test_algorithm_sees_the_step_and_the_count():
  seen = {}

  class Spy(tfmot_rigl.RigL):
    def update_mask(self, layer, drop_fraction):
      seen["step"], seen["count"] = layer.step, layer.active_count
      return super().update_mask(layer, drop_fraction)

  layer = tfmot_rigl.algorithms.LayerUpdate(weight=tf.ones([4, 4]), mask=tf.ones([4, 4]), grad=tf.ones([4, 4]),
                                            state={}, seed=tf.constant([1, 2]), step=tf.constant(6, tf.int64),
                                            active_count=tf.constant(10))
  new_mask, _ = Spy().update_mask(layer, 0.5)
  assert int(seen["step"]) == 6 and int(seen["count"]) == 10 and int(new_mask.numpy().sum()) == 10


def test_fit_resolves_a_fractional_prune_end_and_config_round_trips():
  algorithm = tfmot_rigl.RigL(update_frequency=2, initial_sparsity=0.5, prune_end=0.5, end_step=0.75)
  model = tfmot_rigl.prune_sparse(_model(), algorithm, sparsity=0.9)
  model.compile(tfmot_rigl.wrap_optimizer(keras.optimizers.SGD(0.1), model),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  x, y = np.random.rand(64, 16).astype(np.float32), np.random.randint(0, 4, 64)
  model.fit(x, y, batch_size=8, epochs=2, verbose=0)  # 16 steps: prune_end 8, end 12
  schedule = tfmot_rigl.sparse_wrappers(model)[0].pruning_schedule
  assert (schedule.prune_end, schedule.end_step) == (8, 12)
  for wrapper in tfmot_rigl.sparse_wrappers(model):
    size = int(np.prod(wrapper.pruning_vars[0][1].shape))
    assert int(wrapper.pruning_vars[0][1].numpy().sum()) == size - int(np.floor(wrapper.sparsity_of(0) * size))
  assert tfmot_rigl.algorithms.deserialize(tfmot_rigl.algorithms.serialize(algorithm)) == algorithm
  # The wrapper's config (what .keras / SavedModel files store) keeps the schedule and the starting sparsities.
  wrapper = tfmot_rigl.sparse_wrappers(model)[0]
  rebuilt = type(wrapper).from_config(wrapper.get_config())
  assert rebuilt.pruning_schedule == schedule and rebuilt.initial_sparsity_of(0) == wrapper.initial_sparsity_of(0)
  assert tfmot_rigl.RigL().initial_sparsity is None and not tfmot_rigl.RigL().gradual


def test_bad_gradual_knobs_say_what_to_do():
  with pytest.raises(ValueError, match="initial_sparsity <= sparsity"):
    tfmot_rigl.prune_sparse(_model(), tfmot_rigl.SET(initial_sparsity=0.95), sparsity=0.9, total_steps=100)
  with pytest.raises(ValueError, match="prune_end"):
    tfmot_rigl.prune_sparse(_model(), tfmot_rigl.SNFS(initial_sparsity=0.5, prune_end=90, end_step=50),
                            sparsity=0.9, total_steps=100)
  with pytest.raises(ValueError, match="initial_sparsity"):
    tfmot_rigl.RigL(initial_sparsity=-0.1)


def test_task_sparsity_takes_the_knobs_and_rejects_bad_ones():
  from tfmot_rigl.modelgarden import sparsity_config
  config = sparsity_config.SparsityConfig(method="set", sparsity=0.9, initial_sparsity=0.5, prune_end=300,
                                          total_steps=1000)
  config.validate()
  assert config.algorithm().gradual and config.algorithm().prune_window(1000) == (0, 300)
  for bad, match in (({"initial_sparsity": 0.95}, "initial_sparsity"), ({"prune_end": 900}, "prune_end"),
                     ({"prune_end": -2}, "prune_end")):
    with pytest.raises(ValueError, match=match):
      sparsity_config.SparsityConfig(method="rigl", sparsity=0.9, total_steps=1000,
                                     **{"initial_sparsity": 0.5, "prune_end": 300, **bad}).validate()
