"""Mask math on single tensors: random initial masks and the drop/grow update.

Everything here keeps static shapes, so it compiles with XLA, and takes its randomness from stateless seeds, so every
replica and every restart draws the same numbers.

Selecting the k largest scores is done without sorting: a bisection over the scores' bit patterns finds the k-th
largest value in 32 counting passes (each a compare and a sum over the tensor, cheap and vectorised on every
backend), and a second bisection over seeded random draws breaks ties at that value. The result is exactly the
selection a full sort by (score descending, random draw ascending, index ascending) would make —
`drop_and_grow_reference` is that sort, kept for tests and benchmarks.
"""
import tensorflow as tf

_INT32_MIN = -2**31
_INT32_MAX = 2**31 - 1


def stateless_seed(*parts):
  """An int32 [2] seed for tf.random.stateless_* from integers or scalar tensors (seed, layer, step, purpose)."""
  parts = [tf.cast(p, tf.int64) for p in parts]
  mixed = parts[0]
  for p in parts[1:-1]:
    mixed = mixed * 1000003 + p
  # Fold into int32 range; the two halves keep the last part (normally the step) separate from the rest.
  return tf.cast(tf.stack([tf.math.floormod(mixed, 2**31 - 1), tf.math.floormod(parts[-1], 2**31 - 1)]), tf.int32)


def _tie_draws(size, seed):
  """One int32 draw per element; among equal scores the smaller draw wins (a seeded random order).

  Integer draws with Philox named explicitly are bit-identical with and without XLA (float draws, and the default
  "auto_select" generator, are not), so a compiled and an uncompiled step break ties alike.
  """
  return tf.random.stateless_uniform([size], seed=seed, minval=None, maxval=None, dtype=tf.int32, alg="philox")


def _ordered_keys(scores):
  """int32 keys ordered as the float scores are (−0 and +0 equal; NaN sorts beyond ±inf by its sign bit)."""
  scores = tf.cast(scores, tf.float32)  # exact for float16/bfloat16 scores
  scores = tf.where(tf.equal(scores, 0.0), tf.zeros_like(scores), scores)
  bits = tf.bitcast(scores, tf.int32)
  # Negative floats have their sign bit set and grow in magnitude as their bit pattern grows: flip them below zero.
  return tf.where(bits >= 0, bits, _INT32_MIN - bits - 1)


def _kth_largest(keys, candidates, k):
  """The largest threshold t with #{candidates with key >= t} >= k: the k-th largest candidate key (k >= 1)."""
  k = tf.cast(k, tf.int32)

  def narrow(lo, hi):
    mid = lo + (hi - lo + 1) // 2
    count = tf.reduce_sum(tf.cast(tf.logical_and(candidates, keys >= tf.cast(mid, keys.dtype)), tf.int32))
    enough = count >= k
    return tf.where(enough, mid, lo), tf.where(enough, hi, mid - 1)

  lo, _ = tf.while_loop(lambda lo, hi: lo < hi, narrow,
                        (tf.constant(_INT32_MIN, tf.int64), tf.constant(_INT32_MAX, tf.int64)),
                        maximum_iterations=32)
  return tf.cast(lo, keys.dtype)


def largest(scores, candidates, count, seed):
  """Bool flags of the `count` candidates with the largest scores (1-D tensors); ties in seeded random order.

  The order is (score descending, tie draw ascending, index ascending), the draws being `_tie_draws(size, seed)`.
  `count` may be a tensor; it must not exceed the number of candidates.
  """
  return _largest(tf.cast(scores, tf.float32), tf.cast(candidates, tf.bool), tf.cast(count, tf.int32),
                  tf.cast(seed, tf.int32))


# One graph for every size: eager callers (tests, apply_snip) run the bisection loop as a graph, not op by op.
@tf.function(input_signature=[tf.TensorSpec([None], tf.float32), tf.TensorSpec([None], tf.bool),
                              tf.TensorSpec([], tf.int32), tf.TensorSpec([2], tf.int32)])
def _largest(scores, candidates, count, seed):
  keys = _ordered_keys(scores)

  def select():
    threshold = _kth_largest(keys, candidates, count)
    above = tf.logical_and(candidates, keys > threshold)
    tied = tf.logical_and(candidates, tf.equal(keys, threshold))
    wanted = count - tf.reduce_sum(tf.cast(above, tf.int32))

    def break_ties():
      # Among the tied, the `wanted` smallest draws: the same bisection on the draws, bit-inverted (~x = −x − 1)
      # so that the smallest draw is the largest key; equal draws go by index (a cumulative count).
      draws = tf.bitwise.invert(_tie_draws(tf.size(keys), seed))
      cut = _kth_largest(draws, tied, wanted)
      before = tf.logical_and(tied, draws > cut)
      at_cut = tf.logical_and(tied, tf.equal(draws, cut))
      room = wanted - tf.reduce_sum(tf.cast(before, tf.int32))
      return tf.logical_or(before, tf.logical_and(at_cut, tf.cumsum(tf.cast(at_cut, tf.int32)) <= room))

    all_tied = tf.equal(tf.reduce_sum(tf.cast(tied, tf.int32)), wanted)
    return tf.logical_or(above, tf.cond(all_tied, lambda: tied, break_ties))

  return tf.cond(count > 0, select, lambda: tf.zeros_like(candidates))


def descending_ranks(scores, seed):
  """Rank of each element of 1-D `scores` (0 = largest) by (score desc, tie draw asc, index asc), by full sorts.

  Breaking ties through the order of seeded draws (rather than by adding noise to the scores) never reorders two
  distinct scores, however close they are. The straightforward reference for `largest`.
  """
  size = tf.shape(scores)[0]
  shuffle = tf.argsort(_tie_draws(size, seed), stable=True)
  scores = tf.gather(scores, shuffle)
  scores = tf.where(tf.equal(scores, 0.0), tf.zeros_like(scores), scores)
  order = tf.gather(shuffle, tf.argsort(scores, direction="DESCENDING", stable=True))
  return tf.math.invert_permutation(order)


def random_mask(shape, sparsity: float, seed) -> tf.Tensor:
  """A float mask with exactly floor(sparsity · N) zeros at uniformly random positions, reproducible from `seed`."""
  size = int(tf.TensorShape(shape).num_elements())
  zeros = int(sparsity * size // 1)
  # The ranks of i.i.d. full-range 64-bit integers are a uniformly random permutation (ties have probability
  # ~n²/2⁶⁵), so one sort suffices here (once per layer, when the model is built).
  draws = tf.random.stateless_uniform([size], seed=seed, minval=None, maxval=None, dtype=tf.int64)
  ranks = tf.math.invert_permutation(tf.argsort(draws))
  return tf.reshape(tf.cast(ranks >= zeros, tf.float32), shape)


def top_k_mask(scores, num_active, seed) -> tf.Tensor:
  """A float mask (shape of `scores`) keeping the `num_active` largest scores."""
  flat = tf.reshape(scores, [-1])
  keep = largest(flat, tf.ones_like(flat, tf.bool), num_active, seed)
  return tf.reshape(tf.cast(keep, tf.float32), tf.shape(scores))


def _drop_count(flat_mask, drop_fraction, active_count=None):
  """(n, k): connections kept active (the current count, or `active_count` when smaller) and how many of them drop."""
  num_active = tf.reduce_sum(tf.cast(flat_mask, tf.int32))
  if active_count is not None:  # gradual pruning: keep the largest down to this count first
    num_active = tf.minimum(num_active, tf.cast(active_count, tf.int32))
  return num_active, tf.cast(tf.floor(tf.cast(drop_fraction, tf.float32) * tf.cast(num_active, tf.float32)), tf.int32)


def _finish(mask, flat_mask, keep, grow):
  new_mask = tf.logical_or(keep, grow)
  new_connections = tf.logical_and(new_mask, tf.logical_not(flat_mask))
  shape = tf.shape(mask)
  return tf.reshape(tf.cast(new_mask, mask.dtype), shape), tf.reshape(new_connections, shape)


def drop_and_grow(mask, drop_scores, grow_scores, drop_fraction, seed, active_count=None):
  """One drop/grow update of one layer's mask; the number of active connections is unchanged (or `active_count`).

  Args:
    mask: float 0/1 tensor, the current mask.
    drop_scores: same shape; among active connections the largest are kept (normally |W ⊙ M|).
    grow_scores: same shape; among connections not kept, the largest are activated.
    drop_fraction: scalar f; k = floor(f · n) of the n active connections are dropped and k grown.
    seed: int32 [2] stateless seed for tie-breaking (seed for the drop ranking, seed + 1 for the grow ranking).
    active_count: optional int scalar (gradual pruning): first keep only the `active_count` largest drop scores of
      the n active (when fewer than n), then drop and grow k = floor(f · active_count) of those. Keeping the top
      n' − k of one ranking is the same as pruning to n' and then dropping k, so one selection does both.

  Returns:
    (new_mask, new_connections): new float mask and a bool tensor of connections inactive before and active now.
  """
  flat_mask = tf.reshape(mask, [-1]) > 0.5
  num_active, num_drop = _drop_count(flat_mask, drop_fraction, active_count)
  keep = largest(tf.reshape(drop_scores, [-1]), flat_mask, num_active - num_drop, seed)
  grow = largest(tf.reshape(grow_scores, [-1]), tf.logical_not(keep), num_drop, seed + 1)
  return _finish(mask, flat_mask, keep, grow)


def drop_and_grow_reference(mask, drop_scores, grow_scores, drop_fraction, seed, active_count=None):
  """`drop_and_grow` by full-tensor sorts (four argsorts): the straightforward reference, same results."""
  flat_mask = tf.reshape(mask, [-1]) > 0.5
  num_active, num_drop = _drop_count(flat_mask, drop_fraction, active_count)
  drop_scores = tf.where(flat_mask, tf.reshape(drop_scores, [-1]), -float("inf"))
  keep = tf.logical_and(flat_mask, descending_ranks(drop_scores, seed) < num_active - num_drop)
  grow_scores = tf.where(keep, -float("inf"), tf.reshape(grow_scores, [-1]))
  grow = tf.logical_and(tf.logical_not(keep), descending_ranks(grow_scores, seed + 1) < num_drop)
  return _finish(mask, flat_mask, keep, grow)
