"""One mask update through the wrapped optimizer, checked position by position (REFERENCE.md, steps 1-5).

Gradients are handed to `apply_gradients` directly, with learning rate 0, so every expected position can be
computed by hand from the weights and gradients the test chose.
"""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import tfmot_rigl


def _dense_model(n_in=8, n_out=6, seed=0):
  keras.utils.set_random_seed(seed)
  inputs = keras.Input((n_in,))
  return keras.Model(inputs, keras.layers.Dense(n_out, use_bias=False, name="fc")(inputs))


def _setup(algorithm, optimizer=None, sparsity=0.5, seed=0):
  model = tfmot_rigl.prune_sparse(_dense_model(), algorithm, sparsity=sparsity, distribution="uniform",
                                  first_layer_dense=False, seed=seed)
  optimizer = tfmot_rigl.wrap_optimizer(optimizer or keras.optimizers.SGD(0.0, momentum=0.9), model)
  (wrapper,) = tfmot_rigl.sparse_wrappers(model)
  kernel, mask, _ = wrapper.pruning_vars[0]
  return model, optimizer, wrapper, kernel, mask


def _only_at_step(step, **kwargs):
  return dict(begin_step=step, end_step=step, update_frequency=1, drop_fraction_anneal="constant", **kwargs)


def test_rigl_drops_smallest_active_and_grows_largest_gradient():
  _, optimizer, _, kernel, mask = _setup(tfmot_rigl.RigL(drop_fraction=0.25, **_only_at_step(0)))
  rng = np.random.RandomState(1)
  weights = rng.uniform(0.1, 1.0, kernel.shape).astype("float32") * mask.numpy()
  kernel.assign(weights)
  grad = rng.uniform(0.0, 1.0, kernel.shape).astype("float32")
  old_mask = mask.numpy().copy()
  n = int(old_mask.sum())
  k = int(np.floor(0.25 * n))

  optimizer.apply_gradients([(tf.constant(grad), kernel)])

  new_mask = mask.numpy()
  active = np.flatnonzero(old_mask)
  kept = set(active[np.argsort(-np.abs(weights.ravel()[active]))][:n - k])
  dropped = set(active) - kept
  candidates = np.array(sorted(set(range(old_mask.size)) - kept))
  grown = set(candidates[np.argsort(-grad.ravel()[candidates])][:k])
  assert set(np.flatnonzero(new_mask)) == kept | grown
  assert int(new_mask.sum()) == n                             # exact nnz preserved
  assert dropped and grown - set(active)                      # something really moved
  new = np.array(sorted(grown - set(active)))
  np.testing.assert_array_equal(kernel.numpy().ravel()[new], 0.0)  # grow_init zeros
  assert np.all(kernel.numpy()[new_mask == 0] == 0)


def test_connection_dropped_and_regrown_keeps_its_value():
  _, optimizer, _, kernel, mask = _setup(tfmot_rigl.RigL(drop_fraction=0.5, **_only_at_step(0)))
  weights = (np.arange(kernel.shape.num_elements(), dtype="float32").reshape(kernel.shape) + 1) * mask.numpy()
  kernel.assign(weights)
  # The gradient is largest exactly where the smallest active weights are: they are dropped and grown back.
  grad = np.where(mask.numpy() > 0, 1.0 / (weights + 1e-3), 0.0).astype("float32")
  before = mask.numpy().copy()
  optimizer.apply_gradients([(tf.constant(grad), kernel)])
  np.testing.assert_array_equal(mask.numpy(), before)
  np.testing.assert_array_equal(kernel.numpy(), weights)


@pytest.mark.parametrize("make_optimizer, slot_attrs", [
    (lambda: keras.optimizers.SGD(0.0, momentum=0.9), ["momentums"]),
    (lambda: keras.optimizers.Adam(0.0), ["_momentums", "_velocities"]),
    (lambda: keras.optimizers.RMSprop(0.0, momentum=0.9), ["_velocities", "_momentums"]),
])
def test_optimizer_slots_of_new_and_dropped_connections_are_zero(make_optimizer, slot_attrs):
  _, optimizer, _, kernel, mask = _setup(tfmot_rigl.RigL(drop_fraction=0.5, **_only_at_step(1)), make_optimizer())
  grad = tf.constant(np.random.RandomState(0).rand(*kernel.shape), tf.float32)
  optimizer.apply_gradients([(grad, kernel)])  # step 0 builds the slots
  slots = [getattr(optimizer, attr)[0] for attr in slot_attrs]
  for slot in slots:
    slot.assign(tf.ones_like(slot))  # stale state everywhere, so only the reset can make it zero
  before = mask.numpy().copy()
  optimizer.apply_gradients([(grad, kernel)])  # step 1 updates the mask
  after = mask.numpy()
  new = (after > 0) & (before == 0)
  kept = (after > 0) & (before > 0)
  assert new.any()
  for slot in slots:
    values = slot.numpy()
    np.testing.assert_array_equal(values[new], 0.0)
    np.testing.assert_array_equal(values[after == 0], 0.0)
    assert np.all(values[kept] != 0.0)


def test_legacy_optimizer_slots_are_reset():
  _, optimizer, _, kernel, mask = _setup(tfmot_rigl.RigL(drop_fraction=0.5, **_only_at_step(1)),
                                         keras.optimizers.legacy.SGD(0.0, momentum=0.9))
  grad = tf.constant(np.random.RandomState(0).rand(*kernel.shape), tf.float32)
  optimizer.apply_gradients([(grad, kernel)])
  slot = optimizer.get_slot(kernel, "momentum")
  slot.assign(tf.ones_like(slot))
  before = mask.numpy().copy()
  optimizer.apply_gradients([(grad, kernel)])
  new = (mask.numpy() > 0) & (before == 0)
  assert new.any() and np.all(slot.numpy()[new] == 0.0)


def _grown_positions(seed, grad_seed):
  _, optimizer, _, kernel, mask = _setup(tfmot_rigl.SET(drop_fraction=0.5, **_only_at_step(0)), seed=seed)
  before = mask.numpy().copy()
  grad = tf.constant(np.random.RandomState(grad_seed).rand(*kernel.shape), tf.float32)
  optimizer.apply_gradients([(grad, kernel)])
  return tuple(np.flatnonzero((mask.numpy() > 0) & (before == 0)))


def test_set_grows_seeded_random_positions_independent_of_gradient():
  assert _grown_positions(seed=3, grad_seed=0) == _grown_positions(seed=3, grad_seed=1)
  assert _grown_positions(seed=3, grad_seed=0) != _grown_positions(seed=4, grad_seed=0)


def test_no_update_outside_window_or_off_frequency():
  _, optimizer, _, kernel, mask = _setup(tfmot_rigl.SET(begin_step=4, end_step=8, update_frequency=2,
                                                        drop_fraction=0.5, drop_fraction_anneal="constant"))
  changed = []
  for step in range(12):
    before = mask.numpy().copy()
    optimizer.apply_gradients([(tf.ones(kernel.shape), kernel)])
    if not np.array_equal(before, mask.numpy()):
      changed.append(step)
  assert changed == [4, 6, 8]


def test_same_seed_gives_identical_masks():
  masks = []
  for seed in (5, 5, 6):
    _, optimizer, _, kernel, mask = _setup(tfmot_rigl.SET(drop_fraction=0.3, **_only_at_step(0)), seed=seed)
    initial = mask.numpy().copy()
    optimizer.apply_gradients([(tf.ones(kernel.shape), kernel)])
    masks.append((initial, mask.numpy().copy()))
  np.testing.assert_array_equal(masks[0][0], masks[1][0])
  np.testing.assert_array_equal(masks[0][1], masks[1][1])
  assert not np.array_equal(masks[0][0], masks[2][0])


def test_static_masks_never_change_and_inactive_weights_stay_zero():
  _, optimizer, _, kernel, mask = _setup(tfmot_rigl.Static(), keras.optimizers.SGD(0.1, momentum=0.9))
  before = mask.numpy().copy()
  for _ in range(5):
    optimizer.apply_gradients([(tf.ones(kernel.shape), kernel)])
  np.testing.assert_array_equal(mask.numpy(), before)
  assert np.all(kernel.numpy()[before == 0] == 0.0)
  assert np.all(kernel.numpy()[before > 0] != 0.0)
