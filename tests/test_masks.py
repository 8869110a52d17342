"""Mask math on tiny tensors: initial masks and one drop/grow update."""
import numpy as np
import tensorflow as tf

from tfmot_rigl.core import masks


def test_random_mask_has_exactly_floor_zeros_and_is_seeded():
  a = masks.random_mask([7, 11], 0.9, tf.constant([3, 4]))
  b = masks.random_mask([7, 11], 0.9, tf.constant([3, 4]))
  c = masks.random_mask([7, 11], 0.9, tf.constant([3, 5]))
  assert int(tf.reduce_sum(1 - a)) == int(np.floor(0.9 * 77))
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_drop_and_grow_drops_smallest_active_and_grows_largest_scores():
  mask = tf.constant([1, 1, 1, 1, 0, 0, 0, 0], tf.float32)
  weight = tf.constant([0.5, -0.1, 0.3, -0.05, 0, 0, 0, 0], tf.float32)
  grow = tf.constant([9, 9, 0, 0, 0.2, 5.0, 0.1, 3.0], tf.float32)
  new_mask, new = masks.drop_and_grow(mask, tf.abs(weight), grow, 0.5, tf.constant([1, 2]))
  # keep the two largest |w| (positions 0, 2); grow the two best among the rest: 1 (score 9) and 5 (score 5)
  np.testing.assert_array_equal(new_mask, [1, 1, 1, 0, 0, 1, 0, 0])
  np.testing.assert_array_equal(new, [False, False, False, False, False, True, False, False])


def test_drop_and_grow_preserves_nnz_for_many_random_cases():
  rng = np.random.RandomState(0)
  for trial in range(20):
    shape = (rng.randint(2, 9), rng.randint(2, 9))
    mask = masks.random_mask(shape, rng.uniform(0.1, 0.9), tf.constant([trial, 0]))
    new_mask, _ = masks.drop_and_grow(mask, tf.constant(rng.rand(*shape), tf.float32),
                                      tf.constant(rng.rand(*shape), tf.float32), rng.uniform(0, 1),
                                      tf.constant([trial, 1]))
    assert float(tf.reduce_sum(new_mask)) == float(tf.reduce_sum(mask))


def test_ties_are_broken_by_seed_not_by_position():
  scores = tf.zeros([100])  # every score ties
  picks = {tuple(np.flatnonzero(masks.top_k_mask(scores, 10, tf.constant([s, 0])))) for s in range(3)}
  assert len(picks) == 3
  assert picks != {tuple(range(10))}


def test_distinct_scores_are_never_reordered_by_the_tie_break():
  scores = tf.constant([1.0, 1.0 + 1e-7, 1.0 - 1e-7, 0.5])
  for s in range(5):
    np.testing.assert_array_equal(masks.descending_ranks(scores, tf.constant([s, 0])), [1, 0, 2, 3])


def test_top_k_mask_keeps_largest():
  scores = tf.constant([[0.1, 0.9], [0.5, 0.3]])
  np.testing.assert_array_equal(masks.top_k_mask(scores, 2, tf.constant([0, 0])), [[0, 1], [1, 0]])


def _tied_scores(rng, shape, levels):
  """Scores drawn from a few values (many exact ties), with ±0 among them."""
  values = rng.choice([-1.5, -0.0, 0.0, 0.25, 0.5, 2.0, 7.0][:levels + 2], size=shape)
  return tf.constant(values.astype("float32"))


def test_bisection_selection_equals_the_full_sort_reference_with_ties():
  rng = np.random.RandomState(7)
  for trial in range(60):
    shape = (rng.randint(1, 40), rng.randint(1, 40))
    mask = masks.random_mask(shape, rng.uniform(0.0, 1.0), tf.constant([trial, 0]))
    drop_scores = tf.abs(_tied_scores(rng, shape, rng.randint(1, 5)))
    grow_scores = _tied_scores(rng, shape, rng.randint(1, 5))
    fraction, seed = rng.uniform(0.0, 1.0), tf.constant([trial, 9])
    fast = masks.drop_and_grow(mask, drop_scores, grow_scores, fraction, seed)
    reference = masks.drop_and_grow_reference(mask, drop_scores, grow_scores, fraction, seed)
    np.testing.assert_array_equal(fast[0], reference[0], err_msg=f"trial {trial}")
    np.testing.assert_array_equal(fast[1], reference[1], err_msg=f"trial {trial}")


def test_largest_equals_ranks_of_the_reference_sort_on_random_floats():
  rng = np.random.RandomState(3)
  for trial in range(20):
    size = rng.randint(1, 500)
    scores = tf.constant(rng.standard_normal(size).astype("float32") * 10.0 ** rng.randint(-30, 30))
    count = rng.randint(0, size + 1)
    seed = tf.constant([trial, 1])
    chosen = masks.largest(scores, tf.ones([size], tf.bool), count, seed)
    np.testing.assert_array_equal(chosen, masks.descending_ranks(scores, seed) < count)


def test_selection_compiles_with_xla_and_gives_the_same_masks():
  mask = masks.random_mask([64, 32], 0.8, tf.constant([1, 2]))
  drop_scores, grow_scores = tf.abs(tf.random.stateless_normal([64, 32], [1, 1])), tf.zeros([64, 32])
  compiled = tf.function(masks.drop_and_grow, jit_compile=True)
  eager = masks.drop_and_grow(mask, drop_scores, grow_scores, 0.3, tf.constant([5, 6]))
  xla = compiled(mask, drop_scores, grow_scores, tf.constant(0.3), tf.constant([5, 6]))
  np.testing.assert_array_equal(eager[0], xla[0])
  np.testing.assert_array_equal(eager[1], xla[1])
