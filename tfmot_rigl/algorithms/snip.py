"""SNIP (Lee et al. 2019): one-shot masks before training from connection sensitivity |∂L/∂W ⊙ W|."""
import tensorflow as tf

from tfmot_rigl.algorithms import base
from tfmot_rigl.algorithms import static


@base.register
class SNIP(static.Static):
  """Masks start dense; at step 0 each layer keeps its top (1 − s_l)·N_l connections by |g ⊙ w|, then stays fixed.

  The scoring batch is the first training batch, seen by the wrapped optimizer, so `fit`, custom loops and the Model
  Garden task need nothing extra. To score on chosen batches instead (averaged over several), call
  `tfmot_rigl.apply_snip(model, batches, loss_fn)` before training; the step-0 one-shot then sees sparse masks and
  leaves them alone.
  """

  name = "snip"

  def initial_mask(self, shape, sparsity, seed):
    return tf.ones(shape, tf.float32)

  @staticmethod
  def scores(weight, grad):
    return tf.abs(grad * weight)
