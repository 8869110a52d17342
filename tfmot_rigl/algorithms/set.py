"""SET (Mocanu et al. 2018): drop the smallest weights, regrow at random positions."""
import tensorflow as tf

from tfmot_rigl.algorithms import base


@base.register
class SET(base.SparseAlgorithm):
  """Sparse Evolutionary Training: grow scores are uniform random, seeded from (seed, layer, step)."""

  name = "set"

  def grow_scores(self, layer):
    # Stateless: every replica and every restart draws the same scores for the same step.
    return tf.random.stateless_uniform(tf.shape(layer.mask), layer.seed + 3, dtype=layer.weight.dtype)
