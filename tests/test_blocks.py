"""Block masks (issue 10): constant over (b_in, b_out) blocks of a Dense kernel, at init and after every update,
with the number of active blocks preserved, for every mask-based method; and the knob's errors."""
import logging

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import tfmot_rigl
from tfmot_rigl.core import blocks
from tfmot_rigl.modelgarden import configs


def _block_constant(mask, block_shape):
  """True when every (b_in, b_out) block of each [in, out] slice of `mask` is all 0 or all 1."""
  mask = np.asarray(mask)
  b_in, b_out = block_shape
  n_in, n_out = mask.shape[-2:]
  grid = mask.reshape(-1, n_in // b_in, b_in, n_out // b_out, b_out)
  return bool(np.all(grid.min(axis=(2, 4)) == grid.max(axis=(2, 4))))


def _active_blocks(mask, block_shape):
  b_in, b_out = block_shape
  return int(np.asarray(mask).sum()) // (b_in * b_out)


def test_block_helpers_round_trip_and_reduce_per_block():
  grid = tf.constant([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
  full = blocks.expand(grid, (2, 3), [6, 6])
  assert _block_constant(full, (2, 3))
  np.testing.assert_array_equal(blocks.block_mask(full, (2, 3)), grid)
  scores = tf.reshape(tf.range(36, dtype=tf.float32), [6, 6])
  np.testing.assert_allclose(blocks.reduce_blocks(scores, (2, 3))[0, 0], 0 + 1 + 2 + 6 + 7 + 8)
  np.testing.assert_allclose(blocks.reduce_blocks(scores, (2, 3), "l2")[0, 0], 0 + 1 + 4 + 36 + 49 + 64)
  assert blocks.applies([1, 1, 8, 4], (4, 1)) and not blocks.applies([3, 3, 8, 4], (4, 1))
  assert not blocks.applies([8, 4], (1, 1))


def test_block_drop_scores_rank_blocks_by_norm_and_grow_by_summed_score():
  # One [8, 2] kernel in (4, 1) blocks: 4 blocks, 2 active; drop the weaker active block, grow the stronger inactive.
  mask = blocks.expand(tf.constant([[1.0, 0.0], [1.0, 0.0]]), (4, 1), [8, 2])
  weight = tf.constant(np.array([[3.0, 0], [3.0, 0], [0.1, 0], [0.1, 0], [1.0, 0], [1.0, 0], [1.0, 0], [1.0, 0]],
                                np.float32))
  grad = tf.constant(np.array([[0, 0.1]] * 4 + [[0, 5.0]] * 4, np.float32))
  layer = tfmot_rigl.algorithms.LayerUpdate(weight=weight, mask=mask, grad=grad, state={}, seed=tf.constant([1, 2]))
  # L1: block (0, 0) = 6.2, block (1, 0) = 4.0 -> drop (1, 0); L2 (squares): 18.02 vs 4.0 -> also (1, 0).
  for norm in ("l1", "l2"):
    new_mask, new = tfmot_rigl.make_algorithm("rigl", block_shape=(4, 1), block_norm=norm).update_mask(layer, 0.5)
    np.testing.assert_array_equal(blocks.block_mask(new_mask, (4, 1)), [[1, 0], [0, 1]])
    np.testing.assert_array_equal(blocks.block_mask(tf.cast(new, tf.float32), (4, 1)), [[0, 0], [0, 1]])
  # L1 and L2 disagree here: block (0, 0) = |2|+|2|+0+0 has L1 4 < 4.4 but L2 8 > 4.84 against 1.1 · 4.
  weight = tf.constant(np.array([[2.0, 0]] * 2 + [[0.0, 0]] * 2 + [[1.1, 0]] * 4, np.float32))
  layer = tfmot_rigl.algorithms.LayerUpdate(weight=weight, mask=mask, grad=grad, state={}, seed=tf.constant([1, 2]))
  dropped = {}
  for norm in ("l1", "l2"):
    new_mask, _ = tfmot_rigl.make_algorithm("rigl", block_shape=(4, 1), block_norm=norm).update_mask(layer, 0.5)
    dropped[norm] = np.asarray(blocks.block_mask(new_mask, (4, 1)))[:, 0].tolist()
  assert dropped == {"l1": [0, 1], "l2": [1, 0]}


def _mlp():
  return keras.Sequential([keras.layers.Dense(32, activation="relu", input_shape=(16,), name="fc1"),
                           keras.layers.Dense(8, name="logits")])


def _masks(model):
  return {w.layer.name: w.pruning_vars[0][1].numpy() for w in tfmot_rigl.sparse_wrappers(model)}


@pytest.mark.parametrize("method,block_shape", [("rigl", (4, 1)), ("set", (4, 2)), ("snfs", (2, 4)),
                                                ("static", (4, 1)), ("snip", (4, 1))])
def test_masks_are_block_constant_after_init_and_every_update_with_active_blocks_preserved(method, block_shape):
  knobs = dict(block_shape=block_shape)
  if method in ("rigl", "set", "snfs"):
    knobs.update(update_frequency=2, end_step=1.0, drop_fraction=0.5, drop_fraction_anneal="constant")
  model = tfmot_rigl.prune_sparse(_mlp(), tfmot_rigl.make_algorithm(method, **knobs), sparsity=0.75,
                                  distribution="uniform", first_layer_dense=False, seed=3, total_steps=12)
  optimizer = tfmot_rigl.wrap_optimizer(keras.optimizers.SGD(0.1, momentum=0.9), model)
  loss_fn = keras.losses.MeanSquaredError()
  rng = np.random.RandomState(0)
  initial = _masks(model)
  for name, mask in initial.items():
    assert _block_constant(mask, block_shape), name
    kernel_blocks = mask.size // (block_shape[0] * block_shape[1])
    expected = kernel_blocks if method == "snip" else kernel_blocks - int(np.floor(0.75 * kernel_blocks))
    assert _active_blocks(mask, block_shape) == expected, name
  seen = [initial]
  for _ in range(12):
    x, y = rng.rand(8, 16).astype("float32"), rng.rand(8, 8).astype("float32")
    with tf.GradientTape() as tape:
      loss = loss_fn(y, model(x, training=True))
    optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
    seen.append(_masks(model))
    for wrapper in tfmot_rigl.sparse_wrappers(model):
      kernel, mask, _ = wrapper.pruning_vars[0]
      assert _block_constant(mask.numpy(), block_shape)
      assert np.all(kernel.numpy()[mask.numpy() == 0] == 0)  # inactive weights stay exactly zero
      kernel_blocks = mask.numpy().size // (block_shape[0] * block_shape[1])
      assert _active_blocks(mask.numpy(), block_shape) == kernel_blocks - int(np.floor(0.75 * kernel_blocks))
  changes = sum(int(np.sum(a[name] != b[name])) for a, b in zip(seen[1:], seen[2:]) for name in a)
  if method in ("rigl", "set", "snfs"):
    assert changes > 0  # the updates really moved blocks
  else:
    assert changes == 0


def test_one_by_one_convolutions_get_blocks_and_other_kernels_stay_unstructured():
  model = keras.Sequential([keras.layers.Conv2D(8, 3, input_shape=(6, 6, 4), name="conv3x3"),
                            keras.layers.Conv2D(8, 1, name="conv1x1")])
  model = tfmot_rigl.prune_sparse(model, tfmot_rigl.make_algorithm("static", block_shape=(4, 1)), sparsity=0.75,
                                  distribution="uniform", first_layer_dense=False)
  masks = _masks(model)
  assert _block_constant(masks["conv1x1"], (4, 1))
  assert not _block_constant(masks["conv3x3"], (4, 1))  # 288 · 8 entries at random: blocks would be a miracle


def test_magnitude_blocks_are_tfmot_block_size_on_dense_kernels():
  model = tfmot_rigl.prune_sparse(_mlp(), tfmot_rigl.make_algorithm("magnitude", update_frequency=1, begin_step=0,
                                                                      end_step=4, block_shape=(4, 1)),
                                  sparsity=0.75, distribution="uniform", first_layer_dense=False, total_steps=8)
  model.compile(tfmot_rigl.wrap_optimizer(keras.optimizers.SGD(0.1), model), "mse")
  rng = np.random.RandomState(1)
  model.fit(rng.rand(64, 16), rng.rand(64, 8), batch_size=8, epochs=1, verbose=0)
  stripped = tfmot_rigl.strip_sparse(model)
  for layer in stripped.layers:
    kernel = layer.kernel.numpy()
    assert _block_constant(kernel != 0, (4, 1)), layer.name
    assert np.mean(kernel == 0) == pytest.approx(0.75, abs=0.01), layer.name


def test_kernels_blocks_do_not_tile_are_masked_per_element_and_named(capsys, monkeypatch):
  monkeypatch.setattr(logging.getLogger("tfmot_rigl"), "level", logging.INFO)  # as for an API user
  model = keras.Sequential([keras.layers.Dense(32, input_shape=(16,), name="fc1"),
                            keras.layers.Dense(10, name="logits")])
  sparse = tfmot_rigl.prune_sparse(model, tfmot_rigl.make_algorithm("rigl", block_shape=(4, 4)), sparsity=0.5,
                                   distribution="uniform", first_layer_dense=False, total_steps=10)
  assert "block_shape=[4, 4] does not tile the [in, out] kernel of logits (32, 10): masked per element" in (
      capsys.readouterr().err)
  fc1, logits = (w.pruning_vars[0][1].numpy() for w in tfmot_rigl.sparse_wrappers(sparse))
  assert np.array_equal(fc1, np.repeat(np.repeat(fc1[::4, ::4], 4, 0), 4, 1))  # in blocks
  assert logits.sum() == 160 and not np.array_equal(logits, np.repeat(logits[::4], 4, 0))  # per element, exact count


@pytest.mark.parametrize("bad", [(0, 1), (4,), "4x1", (2.5, 1)])
def test_bad_block_shape_is_one_clear_error(bad):
  with pytest.raises(ValueError, match="must be two positive integers"):
    tfmot_rigl.make_algorithm("rigl", block_shape=bad)


def test_block_knobs_round_trip_through_config_and_model_garden_overrides():
  algorithm = tfmot_rigl.make_algorithm("snfs", block_shape=(4, 1), block_norm="l2")
  assert tfmot_rigl.algorithms.deserialize(tfmot_rigl.algorithms.serialize(algorithm)) == algorithm
  sparsity = configs.SparsityConfig()
  sparsity.override({"block_shape": [16, 1], "block_norm": "l2", "method": "rigl"})
  built = sparsity.algorithm()
  assert built.block_shape == (16, 1) and built.block_norm == "l2"
  sparsity.override({"block_norm": "l3"})
  with pytest.raises(ValueError, match="task.sparsity: block_norm='l3' is unknown"):
    sparsity.validate()
