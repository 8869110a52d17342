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
