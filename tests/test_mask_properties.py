"""Property-based tests of the drop/grow update (hypothesis): any shape, sparsity, drop fraction and scores —
ties, ±inf and NaN included — keep the REFERENCE.md invariants."""
import numpy as np
import tensorflow as tf
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from tfmot_rigl.core import masks

_SCORE = st.one_of(st.sampled_from([0.0, -0.0, 1.0, 2.5, float("inf"), -float("inf"), float("nan")]),
                   st.floats(-1e6, 1e6, width=32))


@st.composite
def updates(draw):
  shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=9))
  mask = draw(hnp.arrays(np.float32, shape, elements=st.sampled_from([0.0, 1.0])))
  drop_scores = draw(hnp.arrays(np.float32, shape, elements=_SCORE))
  grow_scores = draw(hnp.arrays(np.float32, shape, elements=_SCORE))
  fraction = draw(st.floats(0.0, 1.0))
  seed = draw(st.integers(0, 2**20))
  return mask, drop_scores, grow_scores, fraction, seed


@settings(max_examples=100, deadline=None)
@given(updates())
def test_update_invariants(update):
  mask, drop_scores, grow_scores, fraction, seed = update
  new_mask, new_connections = (t.numpy() for t in masks.drop_and_grow(
      tf.constant(mask), tf.constant(drop_scores), tf.constant(grow_scores), fraction, tf.constant([seed, 1])))
  active, now = mask > 0.5, new_mask > 0.5
  num_drop = int(np.floor(np.float32(fraction) * np.float32(active.sum())))
  assert now.sum() == active.sum()                               # nnz preserved, exactly
  dropped = active & ~now
  assert not np.any(dropped & ~active)                           # dropped ⊆ previously active
  np.testing.assert_array_equal(new_connections, now & ~active)  # new = active now, inactive before
  assert new_connections.sum() == dropped.sum() <= num_drop      # as many grown as dropped, at most k
  again = masks.drop_and_grow(tf.constant(mask), tf.constant(drop_scores), tf.constant(grow_scores), fraction,
                              tf.constant([seed, 1]))
  np.testing.assert_array_equal(again[0], new_mask)              # deterministic


@settings(max_examples=60, deadline=None)
@given(updates())
def test_finite_scores_give_the_reference_masks(update):
  mask, drop_scores, grow_scores, fraction, seed = update
  drop_scores = np.abs(np.nan_to_num(drop_scores, posinf=3.0, neginf=3.0))
  grow_scores = np.nan_to_num(grow_scores, posinf=3.0, neginf=-3.0)
  args = (tf.constant(mask), tf.constant(drop_scores), tf.constant(grow_scores), fraction, tf.constant([seed, 2]))
  fast, reference = masks.drop_and_grow(*args), masks.drop_and_grow_reference(*args)
  np.testing.assert_array_equal(fast[0], reference[0])
  np.testing.assert_array_equal(fast[1], reference[1])


@settings(max_examples=60, deadline=None)
@given(updates())
def test_keep_and_grow_selections(update):
  # drop_and_grow's two selections: keep n − k of the active, grow k among the rest — disjoint, exact sizes.
  mask, drop_scores, grow_scores, fraction, seed = update
  active = tf.constant(mask > 0.5)
  n = int(mask.sum())
  k = int(np.floor(np.float32(fraction) * np.float32(n)))
  keep = masks.largest(tf.constant(drop_scores.ravel()), tf.reshape(active, [-1]), n - k, tf.constant([seed, 1]))
  grow = masks.largest(tf.constant(grow_scores.ravel()), tf.logical_not(keep), k, tf.constant([seed, 2]))
  keep, grow = keep.numpy(), grow.numpy()
  assert keep.sum() == n - k and not np.any(keep & ~active.numpy().ravel())   # kept ⊆ previously active
  assert grow.sum() == k and not np.any(grow & keep)                           # grown ∩ kept = ∅
  active_scores = drop_scores.ravel()[active.numpy().ravel()]
  dropped = active.numpy().ravel() & ~keep
  if np.isfinite(active_scores).all() and keep.any() and dropped.any():
    # nothing dropped outranks anything kept
    assert drop_scores.ravel()[keep].min() >= drop_scores.ravel()[dropped].max()
