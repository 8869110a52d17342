"""Mask math on single tensors: random initial masks and the drop/grow update.

Everything here keeps static shapes (full-tensor sorts instead of data-dependent top-k sizes), so it compiles with
XLA, and takes its randomness from stateless seeds, so every replica and every restart draws the same numbers.
"""
import tensorflow as tf


def stateless_seed(*parts):
  """An int32 [2] seed for tf.random.stateless_* from integers or scalar tensors (seed, layer, step, purpose)."""
  parts = [tf.cast(p, tf.int64) for p in parts]
  mixed = parts[0]
  for p in parts[1:-1]:
    mixed = mixed * 1000003 + p
  # Fold into int32 range; the two halves keep the last part (normally the step) separate from the rest.
  return tf.cast(tf.stack([tf.math.floormod(mixed, 2**31 - 1), tf.math.floormod(parts[-1], 2**31 - 1)]), tf.int32)


def descending_ranks(scores, seed):
  """Rank of each element of 1-D `scores` (0 = largest); ties are ordered by a seeded random permutation.

  Breaking ties through the order of a random permutation (rather than by adding noise to the scores) never reorders
  two distinct scores, however close they are.
  """
  size = tf.shape(scores)[0]
  shuffle = tf.argsort(tf.random.stateless_uniform([size], seed=seed))
  order = tf.gather(shuffle, tf.argsort(tf.gather(scores, shuffle), direction="DESCENDING", stable=True))
  return tf.math.invert_permutation(order)


def random_mask(shape, sparsity: float, seed) -> tf.Tensor:
  """A float mask with exactly floor(sparsity · N) zeros at uniformly random positions, reproducible from `seed`."""
  size = int(tf.TensorShape(shape).num_elements())
  zeros = int(sparsity * size // 1)
  # The ranks of i.i.d. full-range 64-bit integers are a uniformly random permutation (ties have probability
  # ~n²/2⁶⁵), so one sort suffices here; full-size ResNet-50 kernels make this the slow part of prune_sparse.
  draws = tf.random.stateless_uniform([size], seed=seed, minval=None, maxval=None, dtype=tf.int64)
  ranks = tf.math.invert_permutation(tf.argsort(draws))
  return tf.reshape(tf.cast(ranks >= zeros, tf.float32), shape)


def top_k_mask(scores, num_active, seed) -> tf.Tensor:
  """A float mask (shape of `scores`) keeping the `num_active` largest scores."""
  ranks = descending_ranks(tf.reshape(scores, [-1]), seed)
  return tf.reshape(tf.cast(ranks < tf.cast(num_active, ranks.dtype), tf.float32), tf.shape(scores))


def drop_and_grow(mask, drop_scores, grow_scores, drop_fraction, seed):
  """One drop/grow update of one layer's mask; the number of active connections is unchanged.

  Args:
    mask: float 0/1 tensor, the current mask.
    drop_scores: same shape; among active connections the largest are kept (normally |W ⊙ M|).
    grow_scores: same shape; among connections not kept, the largest are activated.
    drop_fraction: scalar f; k = floor(f · n) of the n active connections are dropped and k grown.
    seed: int32 [2] stateless seed for tie-breaking.

  Returns:
    (new_mask, new_connections): new float mask and a bool tensor of connections inactive before and active now.
  """
  shape = tf.shape(mask)
  flat_mask = tf.reshape(mask, [-1]) > 0.5
  num_active = tf.reduce_sum(tf.cast(flat_mask, tf.int32))
  num_drop = tf.cast(tf.floor(tf.cast(drop_fraction, tf.float32) * tf.cast(num_active, tf.float32)), tf.int32)
  lowest = tf.constant(-float("inf"), drop_scores.dtype)

  drop_scores = tf.where(flat_mask, tf.reshape(drop_scores, [-1]), lowest)
  keep = descending_ranks(drop_scores, seed) < num_active - num_drop

  grow_scores = tf.where(keep, tf.constant(-float("inf"), grow_scores.dtype), tf.reshape(grow_scores, [-1]))
  grow = descending_ranks(grow_scores, seed + 1) < num_drop

  new_mask = tf.logical_or(keep, grow)
  new_connections = tf.logical_and(new_mask, tf.logical_not(flat_mask))
  return tf.reshape(tf.cast(new_mask, mask.dtype), shape), tf.reshape(new_connections, shape)
